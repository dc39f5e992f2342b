// Scoring throughput of microrl's reward on a JSONL corpus; driven by
// reward_bench.py, which times math-verify on the same completions.
//
//   reward_bench --corpus=FILE.jsonl [--threads=1] [--passes=20]
// Prints one JSON line: {"items", "seconds", "correct"} over the timed passes.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/base/thread_pool.h"
#include "nlohmann/json.hpp"
#include "reward_service/scorer.h"

ABSL_FLAG(std::string, corpus, "", "JSONL {completion, ground_truth}");
ABSL_FLAG(int, threads, 1, "scoring threads (0: one per hardware thread)");
ABSL_FLAG(int, passes, 20, "timed passes over the corpus");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::vector<microrl::reward::ScoreInput> items;
  std::ifstream in(absl::GetFlag(FLAGS_corpus));
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json record = nlohmann::json::parse(line);
    items.push_back({"", "", record["completion"], record["ground_truth"]});
  }
  const microrl::reward::ScoreOptions options;
  const int threads = absl::GetFlag(FLAGS_threads);
  microrl::ThreadPool pool(threads <= 1 ? 1 : static_cast<size_t>(threads));
  std::vector<char> correct(items.size());
  auto pass = [&] {
    if (threads == 1) {
      for (size_t i = 0; i < items.size(); ++i) {
        correct[i] =
            microrl::reward::ScoreCompletion(items[i], options).correct;
      }
    } else {
      pool.ParallelFor(items.size(), [&](size_t i) {
        correct[i] =
            microrl::reward::ScoreCompletion(items[i], options).correct;
      });
    }
  };
  pass();  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int p = 0; p < absl::GetFlag(FLAGS_passes); ++p) pass();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  size_t n_correct = 0;
  for (char c : correct) n_correct += c;
  std::printf("{\"items\": %zu, \"seconds\": %.4f, \"correct\": %zu}\n",
              items.size() * absl::GetFlag(FLAGS_passes), seconds, n_correct);
  return 0;
}
