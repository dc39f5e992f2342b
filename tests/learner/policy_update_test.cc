// The GRPO update on a tiny random decoder: it changes only the LoRA weights,
// nothing at learning rate 0, the same whatever the micro-batch size, and in
// the direction of the advantages.
#include "learner/policy_update.h"

#include <ATen/ATen.h>
#include <torch/types.h>

#include "gtest/gtest.h"
#include "tests/support/tiny_model.h"

namespace microrl::learner {
namespace {

using ::microrl::testing::RandomAdapter;
using ::microrl::testing::TinyDecoder;

std::vector<Sample> Samples(const model::Decoder& decoder,
                            const model::LoraAdapter& adapter) {
  std::vector<Sample> samples = {
      {{3, 17, 5}, {8, 9, 10, 11}, {}, 1.0f},
      {{3, 17, 5}, {12, 1}, {}, -1.0f},
      {{42, 9, 1, 30, 11}, {2, 2, 7}, {}, 0.5f},
      {{42, 9, 1, 30, 11}, {40, 41, 42, 43, 44, 45}, {}, -0.5f},
  };
  // On-policy rollout log-probs: the adapter's own, at the temperature the
  // updates use.
  UpdateOptions options;
  options.temperature = 0.9;
  AdamW unused(adapter.Parameters(), {});
  PolicyUpdater scorer(decoder, const_cast<model::LoraAdapter&>(adapter),
                       unused, options);
  auto scored = scorer.Score(samples, &adapter, false);
  EXPECT_TRUE(scored.ok()) << scored.status();
  for (size_t b = 0; b < samples.size(); ++b) {
    const at::Tensor row = scored->logprobs[b];
    for (size_t t = 0; t < samples[b].completion.size(); ++t) {
      samples[b].rollout_logprobs.push_back(row[t].item<float>());
    }
  }
  return samples;
}

std::vector<at::Tensor> Snapshot(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : tensors) out.push_back(t.detach().clone());
  return out;
}

double MaxDifference(const std::vector<at::Tensor>& a,
                     const std::vector<at::Tensor>& b) {
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, (a[i] - b[i].detach()).abs().max().item<double>());
  }
  return diff;
}

UpdateOptions Options(double lr, int64_t micro_batch_tokens) {
  UpdateOptions options;
  options.schedule.lr = lr;
  options.micro_batch_tokens = micro_batch_tokens;
  options.mini_batches = 2;
  options.loss.kl_coef = 0.05;
  options.loss.entropy_coef = 0.01;
  options.temperature = 0.9;
  return options;
}

// What most tests start from: a tiny decoder, a random adapter, on-policy
// samples, the adapter's weights before any update, and AdamW over them.
struct TinyUpdate {
  TinyUpdate()
      : decoder(TinyDecoder()),
        adapter(RandomAdapter(decoder->config())),
        samples(Samples(*decoder, *adapter)),
        before(Snapshot(adapter->Parameters())),
        optimizer(adapter->Parameters(), {}) {}
  std::unique_ptr<model::Decoder> decoder;
  std::unique_ptr<model::LoraAdapter> adapter;
  std::vector<Sample> samples;
  std::vector<at::Tensor> before;
  AdamW optimizer;
};

TEST(PolicyUpdateTest, ChangesOnlyTheLoraWeights) {
  TinyUpdate setup;
  auto& [decoder, adapter, samples, before, optimizer] = setup;
  const at::Tensor head = decoder->lm_head().clone();
  PolicyUpdater updater(*decoder, *adapter, optimizer, Options(1e-2, 1 << 20));
  int64_t step = 0;
  absl::StatusOr<UpdateStats> stats = updater.Update(samples, step);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(step, 2);
  EXPECT_EQ(stats->optimizer_steps, 2);
  EXPECT_EQ(stats->tokens, 15);
  EXPECT_GT(MaxDifference(before, adapter->Parameters()), 1e-4);
  EXPECT_TRUE(at::equal(head, decoder->lm_head()));
  // On-policy: the learner's log-probs are the rollout's.
  EXPECT_LT(stats->logprob_mismatch_max, 1e-5);
  EXPECT_GT(stats->entropy, 0);
  EXPECT_GT(stats->grad_norm, 0);
}

TEST(PolicyUpdateTest, ZeroLearningRateLeavesTheAdapterUnchanged) {
  TinyUpdate setup;
  auto& [decoder, adapter, samples, before, optimizer] = setup;
  PolicyUpdater updater(*decoder, *adapter, optimizer, Options(0.0, 1 << 20));
  int64_t step = 0;
  ASSERT_TRUE(updater.Update(samples, step).ok());
  EXPECT_EQ(MaxDifference(before, adapter->Parameters()), 0.0);
}

TEST(PolicyUpdateTest, MicroBatchSizeDoesNotChangeTheUpdate) {
  std::unique_ptr<model::Decoder> decoder = TinyDecoder();
  std::vector<std::vector<at::Tensor>> results;
  for (int64_t budget : {1 << 20, 9, 1}) {
    std::unique_ptr<model::LoraAdapter> adapter =
        RandomAdapter(decoder->config());
    const std::vector<Sample> samples = Samples(*decoder, *adapter);
    AdamW optimizer(adapter->Parameters(), {});
    UpdateOptions options = Options(1e-2, budget);
    options.loss.policy.aggregation = LossAggregation::kSeqMeanTokenMean;
    PolicyUpdater updater(*decoder, *adapter, optimizer, options);
    int64_t step = 0;
    absl::StatusOr<UpdateStats> stats = updater.Update(samples, step);
    ASSERT_TRUE(stats.ok()) << stats.status();
    if (budget == 1) {
      EXPECT_EQ(stats->micro_batches, 4);  // one sample each
    }
    results.push_back(Snapshot(adapter->Parameters()));
  }
  EXPECT_LT(MaxDifference(results[0], results[1]), 1e-6);
  EXPECT_LT(MaxDifference(results[0], results[2]), 1e-6);
}

// A stop before the first optimizer step ends the update with nothing
// changed, so the trainer can still save the last completed step; once a step
// has been taken the update runs to its end.
TEST(PolicyUpdateTest, AStopBeforeTheFirstOptimizerStepChangesNothing) {
  TinyUpdate setup;
  auto& [decoder, adapter, samples, before, optimizer] = setup;
  // One sample per micro-batch: the stop comes after the first one.
  PolicyUpdater updater(*decoder, *adapter, optimizer, Options(1e-2, 1));
  int64_t step = 0;
  int asked = 0;
  absl::StatusOr<UpdateStats> stats =
      updater.Update(samples, step, [&] { return ++asked > 1; });
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(step, 0);
  EXPECT_EQ(optimizer.steps(), 0);
  EXPECT_EQ(MaxDifference(before, adapter->Parameters()), 0.0);
  for (const at::Tensor& p : adapter->Parameters()) {
    EXPECT_TRUE(!p.grad().defined() || p.grad().abs().max().item<double>() == 0)
        << "gradients are dropped";
  }
  // A stop asked for after the first optimizer step: the update completes
  // (two mini-batches, two steps), as it would without the stop.
  asked = 0;
  stats = updater.Update(samples, step, [&] { return ++asked > 2; });
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(step, 2);
  EXPECT_GT(MaxDifference(before, adapter->Parameters()), 1e-4);
}

TEST(PolicyUpdateTest, MovesLogProbsTheWayOfTheAdvantages) {
  TinyUpdate setup;
  auto& [decoder, adapter, samples, weights, optimizer] = setup;
  UpdateOptions options = Options(5e-3, 1 << 20);
  options.loss.kl_coef = 0;
  options.loss.entropy_coef = 0;
  options.mini_batches = 1;
  options.recompute_old_logprobs = true;
  PolicyUpdater updater(*decoder, *adapter, optimizer, options);
  auto before = updater.Score(samples, adapter.get(), false);
  int64_t step = 0;
  absl::StatusOr<UpdateStats> stats = updater.Update(samples, step);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_LT(stats->logprob_mismatch_mean, 1e-6);
  auto after = updater.Score(samples, adapter.get(), false);
  const at::Tensor change =
      ((after->logprobs - before->logprobs) * before->mask).sum(1) /
      before->mask.sum(1);
  for (size_t b = 0; b < samples.size(); ++b) {
    EXPECT_EQ(change[b].item<double>() > 0, samples[b].advantage > 0)
        << "sample " << b;
  }
}

TEST(PolicyUpdateTest, RefusesSamplesWithoutOneLogprobPerToken) {
  std::unique_ptr<model::Decoder> decoder = TinyDecoder();
  std::unique_ptr<model::LoraAdapter> adapter =
      RandomAdapter(decoder->config());
  AdamW optimizer(adapter->Parameters(), {});
  PolicyUpdater updater(*decoder, *adapter, optimizer, Options(1e-3, 1024));
  int64_t step = 0;
  EXPECT_FALSE(updater.Update({{{1, 2}, {3, 4}, {-1.0f}, 1.0f}}, step).ok());
}

}  // namespace
}  // namespace microrl::learner
