// learner/grpo.h against the PyTorch reference of tests/learner/grpo_oracle.py
// (verl's and TRL's formulas): advantages, every loss aggregation, clip-higher,
// dual-clip, each KL estimator, the entropy bonus, and the gradients, within
// 1e-5. Plus properties that need no oracle: micro-batches add up to the batch.
#include "learner/grpo.h"

#include <ATen/ATen.h>
#include <torch/types.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include "common/model/tensor_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/optimizer.h"
#include "nlohmann/json.hpp"

namespace microrl::learner {
namespace {

using ::testing::HasSubstr;

void ExpectClose(const at::Tensor& got, const at::Tensor& want,
                 const std::string& what, double tolerance = 1e-5) {
  ASSERT_TRUE(got.defined()) << what;
  const at::Tensor g = got.detach().to(at::kFloat).reshape({-1});
  const at::Tensor w = want.to(at::kFloat).reshape({-1});
  ASSERT_EQ(g.numel(), w.numel()) << what;
  const double diff = (g - w).abs().max().item<double>();
  EXPECT_LE(diff, tolerance) << what << ": max difference " << diff;
}

class GrpoOracleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("MICRORL_GRPO_DIR");
    ASSERT_NE(dir, nullptr)
        << "MICRORL_GRPO_DIR is not set (run through ctest)";
    auto inputs = model::ReadTensors(std::string(dir) + "/inputs.safetensors");
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    inputs_ = *std::move(inputs);
    auto expected =
        model::ReadTensors(std::string(dir) + "/expected.safetensors");
    ASSERT_TRUE(expected.ok()) << expected.status();
    expected_ = *std::move(expected);
    std::ifstream cases(std::string(dir) + "/cases.json");
    cases_ = nlohmann::json::parse(cases);
  }

  std::map<std::string, at::Tensor> inputs_;
  std::map<std::string, at::Tensor> expected_;
  nlohmann::json cases_;
};

TEST_F(GrpoOracleTest, AdvantagesMatch) {
  int checked = 0;
  for (const auto& c : cases_) {
    if (c["kind"] != "advantages") continue;
    AdvantageOptions options;
    const std::string norm = c["norm"];
    options.norm = norm == "group"  ? AdvantageNorm::kGroupStd
                   : norm == "none" ? AdvantageNorm::kNone
                                    : AdvantageNorm::kBatchStd;
    options.epsilon = c["epsilon"];
    ExpectClose(ComputeAdvantages(inputs_["rewards"], c["group_size"], options),
                expected_[c["name"]], c["name"]);
    ++checked;
  }
  EXPECT_EQ(checked, 4);
  ExpectClose(ZeroVarianceGroups(inputs_["rewards"], 4).to(at::kFloat),
              expected_["zero_variance"], "zero-variance groups", 0);
}

TEST_F(GrpoOracleTest, LossesPartsAndGradientsMatch) {
  const at::Tensor& mask = inputs_["mask"];
  const at::Tensor advantages = ComputeAdvantages(
      inputs_["rewards"], 4, {AdvantageNorm::kGroupStd, 1e-6});
  int checked = 0;
  for (const auto& c : cases_) {
    if (c["kind"] != "loss") continue;
    const std::string name = c["name"];
    GrpoLossOptions options;
    options.policy.clip_low = c["clip_low"];
    options.policy.clip_high = c["clip_high"];
    options.policy.dual_clip = c["dual_clip"];
    options.policy.aggregation =
        *ParseLossAggregation(c["aggregation"].get<std::string>());
    options.kl_estimator =
        *ParseKlEstimator(c["kl_estimator"].get<std::string>());
    options.kl_coef = c["kl_coef"];
    options.entropy_coef = c["entropy_coef"];
    const at::Tensor logprob = inputs_["logprob"].clone().requires_grad_(true);
    const at::Tensor entropy = inputs_["entropy"].clone().requires_grad_(true);
    const GrpoLossResult result = GrpoLoss(
        logprob, inputs_["old_logprob"], inputs_["ref_logprob"], entropy,
        advantages, mask, options, NormalizerOf(mask, c["horizon"]));
    result.loss.backward();
    const std::string what = name + " (" + c.dump() + ")";
    ExpectClose(result.loss, expected_[name + ".loss"], what + " loss");
    ExpectClose(result.policy.loss, expected_[name + ".pg"],
                what + " policy loss");
    ExpectClose(result.kl, expected_[name + ".kl"], what + " kl");
    ExpectClose(result.entropy, expected_[name + ".entropy"],
                what + " entropy");
    ExpectClose(result.policy.clip_high_fraction, expected_[name + ".high"],
                what + " high");
    ExpectClose(result.policy.clip_low_fraction, expected_[name + ".low"],
                what + " low");
    ExpectClose(result.policy.dual_clip_fraction, expected_[name + ".dual"],
                what + " dual");
    ExpectClose(result.policy.approx_kl, expected_[name + ".approx_kl"],
                what + " approx kl");
    ExpectClose(logprob.grad(), expected_[name + ".grad_logprob"],
                what + " d/d logprob");
    ExpectClose(entropy.grad(), expected_[name + ".grad_entropy"],
                what + " d/d entropy");
    ++checked;
  }
  EXPECT_EQ(checked, 48);
}

TEST_F(GrpoOracleTest, OffPolicyCorrectionMatches) {
  const at::Tensor& mask = inputs_["mask"];
  const at::Tensor advantages = ComputeAdvantages(
      inputs_["rewards"], 4, {AdvantageNorm::kGroupStd, 1e-6});
  int checked = 0;
  double truncated = 0, masked = 0;
  for (const auto& c : cases_) {
    if (c["kind"] != "off_policy") continue;
    const std::string name = c["name"];
    const std::string what = name + " (" + c.dump() + ")";
    OffPolicyOptions off_policy;
    off_policy.tis_cap = c["tis_cap"];
    const std::string mode = c["mask"];
    off_policy.mask = mode == "token"      ? IsMask::kToken
                      : mode == "sequence" ? IsMask::kSequence
                                           : IsMask::kNone;
    off_policy.mask_low = c["low"];
    off_policy.mask_high = c["high"];
    const OffPolicyWeights correction = OffPolicyCorrection(
        inputs_["old_logprob"], inputs_["rollout_logprob"], mask, off_policy);
    ExpectClose(correction.weights * mask, expected_[name + ".weights"] * mask,
                what + " weights");
    ExpectClose(correction.truncated, expected_[name + ".truncated"],
                what + " truncated", 0);
    ExpectClose(correction.masked, expected_[name + ".masked"],
                what + " masked", 0);
    truncated += correction.truncated.sum().item<double>();
    masked += correction.masked.sum().item<double>();
    PolicyLossOptions options;
    options.clip_high = 0.28;
    options.aggregation =
        *ParseLossAggregation(c["aggregation"].get<std::string>());
    const at::Tensor logprob = inputs_["logprob"].clone().requires_grad_(true);
    const PolicyLossResult result =
        PolicyLoss(logprob, inputs_["old_logprob"], advantages, mask, options,
                   NormalizerOf(mask, c["horizon"]), correction.weights);
    result.loss.backward();
    ExpectClose(result.loss, expected_[name + ".pg"], what + " policy loss");
    ExpectClose(logprob.grad(), expected_[name + ".grad_logprob"],
                what + " d/d logprob");
    ++checked;
  }
  EXPECT_EQ(checked, 10);
  // The cases do truncate and mask.
  EXPECT_GT(truncated, 0);
  EXPECT_GT(masked, 0);
}

TEST_F(GrpoOracleTest,
       AdamWClippingAndCosineScheduleMatchTorchAndTransformers) {
  const auto& c =
      *std::find_if(cases_.begin(), cases_.end(),
                    [](const auto& c) { return c["kind"] == "optimizer"; });
  std::vector<at::Tensor> params = {
      expected_["opt.param0.init"].clone().requires_grad_(true),
      expected_["opt.param1.init"].clone().requires_grad_(true)};
  AdamW optimizer(params,
                  {c["beta1"], c["beta2"], c["epsilon"], c["weight_decay"]});
  ScheduleOptions schedule;
  schedule.lr = c["lr"];
  schedule.cosine = true;
  schedule.warmup_steps = c["warmup"];
  schedule.total_steps = c["total"];
  const at::Tensor lrs = expected_["opt.lrs"];
  for (int step = 0; step < c["steps"].get<int>(); ++step) {
    const std::string prefix = "opt.step" + std::to_string(step);
    for (int i = 0; i < 2; ++i) {
      params[i].mutable_grad() =
          expected_[prefix + ".grad" + std::to_string(i)].clone();
    }
    const double lr = LearningRate(schedule, step);
    EXPECT_NEAR(lr, lrs[step].item<double>(), 1e-12) << "lr of step " << step;
    const double norm = ClipGradNorm(params, c["max_norm"]);
    EXPECT_NEAR(norm, expected_[prefix + ".norm"].item<double>(), 1e-4) << step;
    optimizer.Step(lr);
    for (int i = 0; i < 2; ++i) {
      ExpectClose(params[i], expected_[prefix + ".param" + std::to_string(i)],
                  prefix + " param " + std::to_string(i), 1e-6);
    }
  }
  EXPECT_EQ(optimizer.steps(), 5);
}

TEST(GrpoTest, MicroBatchLossesAddUpToTheBatchLoss) {
  at::manual_seed(1);
  const at::Tensor logprob = -at::rand({6, 7});
  const at::Tensor old_logprob = logprob + (at::rand({6, 7}) - 0.5) * 0.4;
  const at::Tensor mask =
      (at::arange(7).unsqueeze(0) < at::tensor({7, 3, 5, 1, 6, 2}).unsqueeze(1))
          .to(at::kFloat);
  const at::Tensor advantages = at::randn({6});
  for (LossAggregation mode :
       {LossAggregation::kTokenMean, LossAggregation::kSeqMeanTokenMean,
        LossAggregation::kSeqMeanTokenSum,
        LossAggregation::kSeqMeanTokenSumNorm}) {
    PolicyLossOptions options;
    options.aggregation = mode;
    const LossNormalizer whole = NormalizerOf(mask, 7);
    const at::Tensor full =
        PolicyLoss(logprob, old_logprob, advantages, mask, options, whole).loss;
    at::Tensor parts = at::zeros({});
    for (int64_t start : {0, 2, 5}) {
      const int64_t count = start == 0 ? 2 : start == 2 ? 3 : 1;
      parts = parts + PolicyLoss(logprob.narrow(0, start, count),
                                 old_logprob.narrow(0, start, count),
                                 advantages.narrow(0, start, count),
                                 mask.narrow(0, start, count), options, whole)
                          .loss;
    }
    EXPECT_NEAR(full.item<double>(), parts.item<double>(), 1e-6)
        << LossAggregationName(mode);
  }
}

TEST(GrpoTest, OnPolicyLossIsMinusTheMeanAdvantage) {
  // ratio 1 everywhere: no clipping, the loss is -mean(advantage) over tokens.
  const at::Tensor logprob = -at::rand({3, 4});
  const at::Tensor mask = at::ones({3, 4});
  const at::Tensor advantages = at::tensor({1.0f, -2.0f, 0.5f});
  const PolicyLossResult result =
      PolicyLoss(logprob, logprob, advantages, mask, {}, NormalizerOf(mask, 4));
  EXPECT_NEAR(result.loss.item<double>(), -(1.0 - 2.0 + 0.5) / 3, 1e-6);
  EXPECT_EQ(result.clip_high_fraction.item<double>(), 0);
  EXPECT_EQ(result.clip_low_fraction.item<double>(), 0);
}

TEST(GrpoTest, ParsesNamesAndRefusesOthers) {
  EXPECT_EQ(*ParseLossAggregation("seq-mean-token-sum-norm"),
            LossAggregation::kSeqMeanTokenSumNorm);
  EXPECT_THAT(ParseLossAggregation("mean").status().message(),
              HasSubstr("token-mean"));
  EXPECT_EQ(*ParseKlEstimator("low_var_kl"), KlEstimator::kK3);
  EXPECT_FALSE(ParseKlEstimator("k4").ok());
}

}  // namespace
}  // namespace microrl::learner
