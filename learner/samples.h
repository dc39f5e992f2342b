#ifndef MICRORL_LEARNER_SAMPLES_H_
#define MICRORL_LEARNER_SAMPLES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "learner/generation.h"
#include "learner/grpo.h"
#include "learner/policy_update.h"
#include "learner/reward_client.h"
#include "learner/run_log.h"

namespace microrl::learner {

struct SampleOptions {
  int64_t group_size = 1;
  AdvantageOptions advantage;
  // Leave out groups whose rewards are all equal (their advantages are 0).
  bool filter_zero_variance = false;
};

// A step's training samples from its completion groups and their scores
// (`scores` problem-major, one per completion): group-relative advantages,
// then one Sample per completion that is kept (empty completions never are).
// Adds the step's reward and length metrics to `metrics`: reward_mean,
// reward_std, reward/<component>, accuracy, zero_variance_fraction,
// response_length_mean, response_length_max, clipped_ratio,
// trained_completions. A pure function.
std::vector<Sample> BuildSamples(const std::vector<CompletionGroup>& groups,
                                 const std::vector<RewardResult>& scores,
                                 const SampleOptions& options,
                                 StepMetrics& metrics);

// A data-parallel rank's share of a step's samples. `groups` and `scores` hold
// the whole step (every rank's groups; other ranks' completions need only
// completion_tokens and truncated), advantages and metrics are the whole
// step's, and only groups [first_group, end_group) become samples. Samples are
// numbered over the whole step, group-major: the share is
// [first_sample, first_sample + samples.size()) of global_samples.
struct SampleShare {
  std::vector<Sample> samples;
  int64_t global_samples = 0;
  int64_t first_sample = 0;
};
SampleShare BuildSampleShare(const std::vector<CompletionGroup>& groups,
                             const std::vector<RewardResult>& scores,
                             const SampleOptions& options, int64_t first_group,
                             int64_t end_group, StepMetrics& metrics);

// The reward service's items for a step's completions, problem-major, each
// with its prompt's text and its problem's answer; ids are "<problem>#<k>".
std::vector<RewardItem> RewardItemsFor(
    const std::vector<std::string>& problem_ids,
    const std::vector<std::string>& prompt_texts,
    const std::vector<std::string>& answers,
    const std::vector<CompletionGroup>& groups);

// How many completions came from another adapter version than `version`;
// `*seen` is set to one such version (the last).
int64_t CountOffPolicy(const std::vector<CompletionGroup>& groups,
                       uint64_t version, uint64_t* seen);

// The completion tokens of a step's groups.
int64_t CompletionTokens(const std::vector<CompletionGroup>& groups);

// How a step's groups were spread over several rollout servers:
// rollout_groups_per_server and rollout_redispatched.
void AddDispatchMetrics(const std::vector<int64_t>& groups_per_server,
                        int64_t redispatched, StepMetrics& metrics);

// The update's metrics (loss terms, clipping, KL, gradient norm, learning
// rate, log-prob mismatch, optimizer steps) added to `metrics`; with
// `off_policy` (a correction was active), is_weight_mean,
// is_truncated_fraction and is_masked_fraction too.
void AddUpdateMetrics(const UpdateStats& stats, bool off_policy,
                      StepMetrics& metrics);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_SAMPLES_H_
