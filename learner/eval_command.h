#ifndef MICRORL_LEARNER_EVAL_COMMAND_H_
#define MICRORL_LEARNER_EVAL_COMMAND_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "learner/rollout_client.h"

namespace microrl::learner {

struct EvalCommandOptions {
  std::string
      model_dir;  // tokenizer.json + tokenizer_config.json (chat template)
  std::string
      adapter_dir;  // PEFT adapter to evaluate ("": the server's current one)
  bool compare_base = false;  // also evaluate the base model (LoRA off)
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
  std::string rollout_address;
  std::string reward_address;
  rpc::ClientSecurity rollout_security;
  rpc::ClientSecurity reward_security;
  std::string out_dir;  // eval.json and eval.md ("": print only)
};

// `learner eval`: pass@k of an adapter (and optionally the base model) on
// datasets, through a running rollout server and reward service; prints and
// writes a table like the paper's Table 1 (pass@k) and, with compare_base, its
// Table 2 (relative change of mean token entropy against the base model).
// `rollout` (if given) is used instead of a new client; `stop` (if given)
// makes it return Cancelled between datasets once set.
absl::Status RunEvalCommand(const EvalCommandOptions& options,
                            RolloutClient* rollout = nullptr,
                            const std::atomic<bool>* stop = nullptr);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_EVAL_COMMAND_H_
