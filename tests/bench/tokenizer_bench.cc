// Encode throughput of microrl's tokenizer on a JSONL corpus; driven by
// tokenizer_bench.py, which runs Hugging Face tokenizers on the same texts.
//
//   tokenizer_bench --tokenizer=PATH --corpus=FILE.jsonl
//   [--fields=problem,solution]
//                   [--passes=3]
// Prints one JSON line: {"bytes", "tokens", "seconds"} for the timed passes
// (after one warm-up pass unless --warmup=false), single-threaded.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, tokenizer, "", "tokenizer.json");
ABSL_FLAG(std::string, corpus, "", "JSONL file");
ABSL_FLAG(std::string, fields, "problem,solution",
          "fields of each line to encode");
ABSL_FLAG(int, passes, 3, "timed passes over the corpus");
ABSL_FLAG(bool, warmup, true,
          "encode the corpus once, untimed, first (fills the cache)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto tokenizer =
      microrl::tokenizer::Tokenizer::FromFile(absl::GetFlag(FLAGS_tokenizer));
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  const std::vector<std::string> fields =
      absl::StrSplit(absl::GetFlag(FLAGS_fields), ',');
  std::vector<std::string> texts;
  std::ifstream in(absl::GetFlag(FLAGS_corpus));
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json record = nlohmann::json::parse(line);
    for (const std::string& field : fields) {
      if (record.contains(field) && record[field].is_string())
        texts.push_back(record[field]);
    }
  }
  size_t tokens = 0;
  if (absl::GetFlag(FLAGS_warmup)) {
    for (const std::string& text : texts)
      tokens += (*tokenizer)->Encode(text).size();
  }
  size_t bytes = 0;
  tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int pass = 0; pass < absl::GetFlag(FLAGS_passes); ++pass) {
    for (const std::string& text : texts) {
      bytes += text.size();
      tokens += (*tokenizer)->Encode(text).size();
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::printf("{\"bytes\": %zu, \"tokens\": %zu, \"seconds\": %.4f}\n", bytes,
              tokens, seconds);
  return 0;
}
