// Data-parallel updates: ranks (threads, Gloo on loopback) that each hold a
// share of a batch, with unequal token counts and one rank holding none, take
// the optimizer steps one process with the whole batch takes.
#include <ATen/ATen.h>
#include <torch/types.h>

#include "common/distributed/communicator.h"
#include "gtest/gtest.h"
#include "learner/policy_update.h"
#include "tests/support/ranks.h"
#include "tests/support/tiny_model.h"

namespace microrl::learner {
namespace {

using ::microrl::testing::RandomAdapter;
using ::microrl::testing::TinyDecoder;

// Eight samples over three prompts, completion lengths 1 to 9.
std::vector<Sample> Samples() {
  const std::vector<std::vector<int32_t>> prompts = {
      {3, 17, 5}, {42, 9, 1, 30, 11}, {7, 8}};
  const std::vector<std::vector<int32_t>> completions = {
      {8, 9, 10, 11}, {12},
      {2, 2, 7},      {40, 41, 42, 43, 44, 45, 46, 47, 48},
      {5, 6},         {1, 2, 3},
      {30},           {20, 21, 22, 23, 24, 25, 26}};
  std::vector<Sample> samples;
  for (size_t i = 0; i < completions.size(); ++i) {
    Sample s;
    s.prompt = prompts[i % prompts.size()];
    s.completion = completions[i];
    // Off-policy by a little, so the ratio and its clipping matter.
    for (size_t t = 0; t < s.completion.size(); ++t)
      s.rollout_logprobs.push_back(-3.0f - 0.1f * static_cast<float>(t + i));
    s.advantage = (i % 3 == 0 ? 1.0f : -0.7f) * static_cast<float>(i + 1) / 8;
    samples.push_back(std::move(s));
  }
  return samples;
}

UpdateOptions Options(LossAggregation aggregation) {
  UpdateOptions options;
  options.schedule.lr =
      1e3;  // with Linear(): weights move by about the gradient
  options.micro_batch_tokens = 24;  // several micro-batches per rank
  options.mini_batches = 3;  // global mini-batches cross the ranks' shares
  options.loss.policy.aggregation = aggregation;
  options.loss.kl_coef = 0.05;
  options.loss.entropy_coef = 0.01;
  options.temperature = 0.9;
  options.max_grad_norm = 0;  // measure only: the gradient reaches the weights
  options.horizon = 16;
  return options;
}

// AdamW with a large epsilon moves each weight by about lr * grad / epsilon
// (the first moment over a square root that epsilon dominates), so the
// weights show the gradients' values, not only their signs.
AdamWOptions Linear() {
  AdamWOptions adam;
  adam.epsilon = 1e3;
  return adam;
}

struct Result {
  std::vector<at::Tensor> weights;
  UpdateStats stats;
};

Result Copy(const model::LoraAdapter& adapter, const UpdateStats& stats) {
  Result r;
  for (const at::Tensor& t : adapter.Parameters())
    r.weights.push_back(t.detach().clone());
  r.stats = stats;
  return r;
}

Result OneProcess(const model::Decoder& decoder, LossAggregation aggregation) {
  std::unique_ptr<model::LoraAdapter> adapter = RandomAdapter(decoder.config());
  AdamW optimizer(adapter->Parameters(), Linear());
  PolicyUpdater updater(decoder, *adapter, optimizer, Options(aggregation));
  int64_t step = 0;
  absl::StatusOr<UpdateStats> stats = updater.Update(Samples(), step);
  EXPECT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(step, 3);
  return Copy(*adapter, stats.value_or(UpdateStats{}));
}

// The ranks' shares of Samples(): [bounds[r], bounds[r + 1]).
std::vector<Result> Ranks(const model::Decoder& decoder,
                          LossAggregation aggregation,
                          const std::vector<int64_t>& bounds) {
  const int world = static_cast<int>(bounds.size()) - 1;
  std::vector<Result> results(world);
  // Made here, one after another: RandomAdapter seeds the global generator.
  std::vector<std::unique_ptr<model::LoraAdapter>> adapters;
  for (int r = 0; r < world; ++r)
    adapters.push_back(RandomAdapter(decoder.config()));
  testing::RunRanks(world, [&](int r, distributed::Communicator& comm) {
    model::LoraAdapter* adapter = adapters[r].get();
    AdamW optimizer(adapter->Parameters(), Linear());
    PolicyUpdater updater(decoder, *adapter, optimizer, Options(aggregation));
    const std::vector<Sample> all = Samples();
    const std::vector<Sample> share(all.begin() + bounds[r],
                                    all.begin() + bounds[r + 1]);
    DataParallel dp{&comm, static_cast<int64_t>(all.size()), bounds[r]};
    int64_t step = 0;
    absl::StatusOr<UpdateStats> stats = updater.Update(share, step, {}, &dp);
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(step, 3);
    results[r] = Copy(*adapter, *stats);
  });
  return results;
}

double MaxDifference(const std::vector<at::Tensor>& a,
                     const std::vector<at::Tensor>& b) {
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    diff = std::max(diff, (a[i] - b[i]).abs().max().item<double>());
  return diff;
}

class DataParallelUpdateTest
    : public ::testing::TestWithParam<LossAggregation> {};

TEST_P(DataParallelUpdateTest, RanksStepAsOneProcessWithTheWholeBatch) {
  std::unique_ptr<model::Decoder> decoder = TinyDecoder();
  const Result one = OneProcess(*decoder, GetParam());
  std::unique_ptr<model::LoraAdapter> start = RandomAdapter(decoder->config());
  std::vector<at::Tensor> initial;
  for (const at::Tensor& t : start->Parameters())
    initial.push_back(t.detach().clone());
  // The update is visible: the gradient moved the weights.
  ASSERT_GT(MaxDifference(one.weights, initial), 1e-3);
  // Unequal token counts: 1 sample, none, 7 samples; and 3 | 5.
  for (const std::vector<int64_t>& bounds :
       {std::vector<int64_t>{0, 1, 1, 8}, std::vector<int64_t>{0, 3, 8}}) {
    const std::vector<Result> ranks = Ranks(*decoder, GetParam(), bounds);
    for (size_t r = 0; r < ranks.size(); ++r) {
      SCOPED_TRACE(::testing::Message()
                   << "rank " << r << " of " << ranks.size());
      EXPECT_LE(MaxDifference(ranks[r].weights, one.weights), 1e-6);
      // Every rank holds the same weights, bit for bit.
      EXPECT_EQ(MaxDifference(ranks[r].weights, ranks[0].weights), 0.0);
      const UpdateStats& s = ranks[r].stats;
      EXPECT_EQ(s.tokens, one.stats.tokens);
      EXPECT_EQ(s.optimizer_steps, one.stats.optimizer_steps);
      EXPECT_NEAR(s.grad_norm, one.stats.grad_norm, 1e-5 * one.stats.grad_norm);
      EXPECT_NEAR(s.loss, one.stats.loss, 1e-5);
      EXPECT_NEAR(s.entropy, one.stats.entropy, 1e-5);
      EXPECT_NEAR(s.kl, one.stats.kl, 1e-6);
      EXPECT_NEAR(s.clip_low_fraction, one.stats.clip_low_fraction, 1e-6);
      EXPECT_NEAR(s.logprob_mismatch_mean, one.stats.logprob_mismatch_mean,
                  1e-5);
      EXPECT_NEAR(s.logprob_mismatch_max, one.stats.logprob_mismatch_max, 1e-5);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Aggregations, DataParallelUpdateTest,
    ::testing::Values(LossAggregation::kTokenMean,
                      LossAggregation::kSeqMeanTokenMean,
                      LossAggregation::kSeqMeanTokenSumNorm));

}  // namespace
}  // namespace microrl::learner
