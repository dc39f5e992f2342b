#ifndef MICRORL_LEARNER_BENCHMARKS_H_
#define MICRORL_LEARNER_BENCHMARKS_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "learner/reward_client.h"
#include "learner/rollout_client.h"

namespace microrl::learner {

// An evaluation on benchmark datasets, as in the paper's Tables 1 and 2.
struct BenchmarkOptions {
  // tokenizer.json + tokenizer_config.json (chat template)
  std::string model_dir;
  // name=path.jsonl entries; a bare name X means <data_dir>/X.jsonl.
  std::vector<std::string> datasets;
  std::string data_dir;
  std::string problem_field = "problem";
  std::string answer_field = "answer";
  std::string system_prompt;
  std::string instruction;
  int64_t problems = 0;  // first N of each dataset (0: all)
  int64_t samples = 16;
  double temperature = 0.6;
  double top_p = 0.95;
  int64_t max_tokens = 3584;
  uint64_t seed = 1;
  std::vector<int64_t> ks = {1, 8, 16};
  bool compare_base = false;  // also evaluate the base model (LoRA off)
  // The adapter version the served completions must come from at least, and
  // how eval.json names that model.
  uint64_t min_adapter_version = 0;
  std::string model_label = "served";
  std::string out_dir;  // eval.json and eval.md ("": print only)
};

// pass@k of the adapter the rollout server serves (and with compare_base, of
// the base model) on each dataset, scored by `reward`; prints and writes a
// table like the paper's Table 1 (pass@k) and, with compare_base, its Table 2
// (relative change of mean token entropy against the base model). `stop` (if
// given) makes it return CANCELLED between datasets once set. Used by
// `learner eval` and by a training run's final evaluation.
absl::Status RunBenchmarks(const BenchmarkOptions& options,
                           CompletionSource& rollout,
                           const RewardClient& reward,
                           const std::atomic<bool>* stop = nullptr);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_BENCHMARKS_H_
