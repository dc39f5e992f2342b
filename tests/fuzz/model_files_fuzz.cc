// libFuzzer target over the files a user points microrl at: the first byte picks
//   0: the rest as a model's config.json (ParseModelConfig);
//   1: the rest as a JSONL problem set (LoadProblems, through a file).
// Anything must give a config/problem list or an error naming the file, never a
// crash. Built and run by tests/fuzz/run_fuzz.sh model_files.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "common/model/config.h"
#include "learner/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    auto config = microrl::model::ParseModelConfig(rest, "config.json");
    if (config.ok() && (config->hidden_size <= 0 || config->num_layers <= 0))
      __builtin_trap();  // accepted sizes must be usable
    return 0;
  }
  static const std::string path =
      "/tmp/microrl_fuzz_" + std::to_string(getpid()) + ".jsonl";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(rest.data(), 1, rest.size(), f);
  std::fclose(f);
  auto problems = microrl::learner::LoadProblems(path, "problem", "answer");
  if (problems.ok()) {
    for (const auto& p : *problems) {
      if (p.line < 1) __builtin_trap();
    }
  }
  return 0;
}
