#ifndef MICRORL_LEARNER_EVALUATE_H_
#define MICRORL_LEARNER_EVALUATE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "learner/data.h"
#include "learner/reward_client.h"
#include "learner/rollout_client.h"
#include "nlohmann/json.hpp"

namespace microrl::learner {

struct EvalOptions {
  int64_t samples = 16;  // n completions per problem
  double temperature = 0.6;
  double top_p = 0.95;
  int64_t max_tokens = 3584;
  uint64_t seed = 1;
  std::vector<int64_t> ks = {1, 8, 16};
  uint64_t min_adapter_version = 0;
  bool disable_adapter = false;  // evaluate the base model
  int64_t prompts_per_call = 64;
};

struct EvalResult {
  std::string dataset;
  int64_t problems = 0;
  int64_t samples = 0;  // per problem
  std::map<int64_t, double>
      pass_at;          // k -> unbiased pass@k, averaged over problems
  double accuracy = 0;  // correct completions / all
  double mean_reward = 0;
  double mean_length = 0;  // completion tokens
  // Mean over completions of the mean negative log-prob of their sampled
  // tokens: a Monte Carlo estimate of the policy's mean token entropy at the
  // sampling temperature.
  double mean_entropy = 0;
  uint64_t adapter_version = 0;
  std::vector<int64_t> correct;  // per problem, of `samples`
};

// The unbiased pass@k estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)
// for n samples of which c are correct (1 when n - c < k).
double PassAtK(int64_t n, int64_t c, int64_t k);

// Samples `options.samples` completions of each problem from the rollout
// server, scores them with the reward service, and computes pass@k for each
// k <= samples.
absl::StatusOr<EvalResult> Evaluate(const std::string& dataset,
                                    const std::vector<Problem>& problems,
                                    const PromptBuilder& prompts,
                                    CompletionSource& rollout,
                                    const RewardClient& reward,
                                    const EvalOptions& options);

nlohmann::ordered_json EvalResultToJson(const EvalResult& result);

// A markdown table like the paper's Table 1: one row per result, columns
// pass@k for the ks.
std::string PassAtKTable(const std::vector<EvalResult>& results,
                         const std::vector<int64_t>& ks);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_EVALUATE_H_
