// A step's samples and metrics from its completion groups and scores, checked
// against values worked out by hand from GRPO's formula (TRL's and verl's):
// advantage = (r - group mean) / (unbiased group std + eps).
#include "learner/samples.h"

#include <cmath>

#include "gtest/gtest.h"

namespace microrl::learner {
namespace {

Completion Made(std::vector<int32_t> ids, int64_t tokens, bool truncated,
                uint64_t version = 3) {
  Completion c;
  c.token_ids = std::move(ids);
  c.logprobs.assign(c.token_ids.size(), -0.5f);
  c.text = "x";
  c.completion_tokens = tokens;
  c.truncated = truncated;
  c.adapter_version = version;
  return c;
}

RewardResult Scored(double reward, bool correct) {
  RewardResult r;
  r.reward = reward;
  r.correct = correct;
  r.components = {{"format", correct ? 0.1 : 0.0}};
  return r;
}

// Two prompts, two completions each: the first group's rewards differ, the
// second's are equal (zero variance); one completion is empty.
struct Step {
  std::vector<CompletionGroup> groups;
  std::vector<RewardResult> scores;
};

Step TwoGroups() {
  Step step;
  step.groups.resize(2);
  step.groups[0].prompt_token_ids = {1, 2};
  step.groups[0].completions = {Made({5, 6, 7}, 3, false), Made({8}, 1, true)};
  step.groups[1].prompt_token_ids = {3};
  step.groups[1].completions = {Made({9, 9}, 2, false), Made({}, 0, true)};
  step.scores = {Scored(1.1, true), Scored(0.0, false), Scored(1.1, true),
                 Scored(1.1, true)};
  return step;
}

TEST(BuildSamplesTest, GroupRelativeAdvantagesAndMetrics) {
  const Step step = TwoGroups();
  SampleOptions options;
  options.group_size = 2;
  StepMetrics m;
  const std::vector<Sample> samples =
      BuildSamples(step.groups, step.scores, options, m);
  // The empty completion is never trained on; the rest are, in order.
  ASSERT_EQ(samples.size(), 3u);
  const double std = std::sqrt(2 * 0.55 * 0.55);  // unbiased, n = 2
  EXPECT_NEAR(samples[0].advantage, 0.55 / (std + 1e-6), 1e-5);
  EXPECT_NEAR(samples[1].advantage, -0.55 / (std + 1e-6), 1e-5);
  EXPECT_NEAR(samples[2].advantage, 0.0, 1e-6);
  EXPECT_EQ(samples[0].prompt, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(samples[0].completion, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(samples[0].rollout_logprobs.size(), 3u);
  EXPECT_EQ(samples[2].prompt, (std::vector<int32_t>{3}));

  EXPECT_NEAR(m["reward_mean"].get<double>(), 3.3 / 4, 1e-12);
  // Unbiased std of {1.1, 0, 1.1, 1.1}: sqrt((3 * 0.275^2 + 0.825^2) / 3).
  EXPECT_NEAR(m["reward_std"].get<double>(), 0.55, 1e-9);
  EXPECT_NEAR(m["reward/format"].get<double>(), 0.075, 1e-12);
  EXPECT_DOUBLE_EQ(m["accuracy"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(m["zero_variance_fraction"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(m["response_length_mean"].get<double>(), 1.5);
  EXPECT_EQ(m["response_length_max"].get<int64_t>(), 3);
  EXPECT_DOUBLE_EQ(m["clipped_ratio"].get<double>(), 0.5);
  EXPECT_EQ(m["trained_completions"].get<int64_t>(), 3);
}

TEST(BuildSamplesTest, FiltersZeroVarianceGroups) {
  const Step step = TwoGroups();
  SampleOptions options;
  options.group_size = 2;
  options.filter_zero_variance = true;
  StepMetrics m;
  const std::vector<Sample> samples =
      BuildSamples(step.groups, step.scores, options, m);
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_GT(samples[0].advantage, 0);
  EXPECT_LT(samples[1].advantage, 0);
  EXPECT_EQ(m["trained_completions"].get<int64_t>(), 2);
}

TEST(BuildSamplesTest, DrGrpoLeavesTheStdOut) {
  const Step step = TwoGroups();
  SampleOptions options;
  options.group_size = 2;
  options.advantage.norm = AdvantageNorm::kNone;
  StepMetrics m;
  const std::vector<Sample> samples =
      BuildSamples(step.groups, step.scores, options, m);
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_NEAR(samples[0].advantage, 0.55, 1e-6);
  EXPECT_NEAR(samples[1].advantage, -0.55, 1e-6);
}

// A data-parallel rank's share: other ranks' groups carry lengths only, and
// the shares of all ranks concatenate to the whole step's samples, numbered
// as BuildSamples numbers them, with the whole step's metrics.
TEST(BuildSamplesTest, RankSharesConcatenateToTheWholeStep) {
  for (bool filter : {false, true}) {
    SCOPED_TRACE(filter ? "filtering zero-variance groups" : "all groups");
    const Step step = TwoGroups();
    SampleOptions options;
    options.group_size = 2;
    options.filter_zero_variance = filter;
    StepMetrics whole_metrics;
    const std::vector<Sample> whole =
        BuildSamples(step.groups, step.scores, options, whole_metrics);
    std::vector<Sample> joined;
    for (int64_t rank = 0; rank < 2; ++rank) {
      // What the exchange gives rank `rank`: the other group without ids.
      Step seen = step;
      for (Completion& c : seen.groups[1 - rank].completions) {
        c.token_ids.clear();
        c.logprobs.clear();
      }
      seen.groups[1 - rank].prompt_token_ids.clear();
      StepMetrics m;
      const SampleShare share = BuildSampleShare(seen.groups, seen.scores,
                                                 options, rank, rank + 1, m);
      EXPECT_EQ(share.global_samples, static_cast<int64_t>(whole.size()));
      EXPECT_EQ(share.first_sample, static_cast<int64_t>(joined.size()));
      EXPECT_EQ(m, whole_metrics);
      joined.insert(joined.end(), share.samples.begin(), share.samples.end());
    }
    ASSERT_EQ(joined.size(), whole.size());
    for (size_t i = 0; i < whole.size(); ++i) {
      EXPECT_EQ(joined[i].completion, whole[i].completion) << i;
      EXPECT_EQ(joined[i].prompt, whole[i].prompt) << i;
      EXPECT_EQ(joined[i].advantage, whole[i].advantage) << i;
    }
  }
}

TEST(RewardItemsForTest, OneItemPerCompletionProblemMajor) {
  const Step step = TwoGroups();
  const std::vector<RewardItem> items =
      RewardItemsFor({"a", "b"}, {"pa", "pb"}, {"1", "2"}, step.groups);
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items[1].id, "a#1");
  EXPECT_EQ(items[2].id, "b#0");
  EXPECT_EQ(items[2].prompt, "pb");
  EXPECT_EQ(items[3].ground_truth, "2");
}

TEST(CountOffPolicyTest, CountsOtherVersions) {
  Step step = TwoGroups();
  step.groups[1].completions[0].adapter_version = 7;
  uint64_t seen = 3;
  EXPECT_EQ(CountOffPolicy(step.groups, 3, &seen), 1);
  EXPECT_EQ(seen, 7u);
  EXPECT_EQ(CountOffPolicy(step.groups, 7, &seen), 3);
}

}  // namespace
}  // namespace microrl::learner
