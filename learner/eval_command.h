#ifndef MICRORL_LEARNER_EVAL_COMMAND_H_
#define MICRORL_LEARNER_EVAL_COMMAND_H_

#include <string>

#include "absl/status/status.h"
#include "common/rpc/security.h"
#include "learner/benchmarks.h"
#include "learner/openai_client.h"

namespace microrl::learner {

struct EvalCommandOptions {
  BenchmarkOptions benchmarks;
  // A PEFT adapter to load and evaluate ("": the server's current one).
  std::string adapter_dir;
  std::string rollout_address;
  std::string reward_address;
  rpc::ClientSecurity rollout_security;
  rpc::ClientSecurity reward_security;
  // Evaluate an OpenAI-compatible server instead of the rollout server (when
  // openai.base_url is set; adapter_dir is then refused).
  OpenAiClientOptions openai;
};

// `learner eval`: connects to a running rollout server (or, with
// openai.base_url, any OpenAI-compatible server) and reward service,
// wakes the rollout server if a colocated run left it asleep, loads
// `adapter_dir` (if given) as a new version, and runs the benchmarks
// (RunBenchmarks) on it.
absl::Status RunEvalCommand(const EvalCommandOptions& options);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_EVAL_COMMAND_H_
