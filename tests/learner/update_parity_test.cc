// One GRPO update against transformers + PEFT (tests/learner/update_oracle.py,
// run by ctest before this test): the loss, the gradient of every LoRA weight
// and the adapter after one AdamW step, with packed shared-prompt micro-batches
// (the default), packed ones without sharing, and padded ones, under token
// budgets that cut groups across micro-batches.
#include <ATen/ATen.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/model/decoder.h"
#include "common/model/lora.h"
#include "common/model/tensor_io.h"
#include "gtest/gtest.h"
#include "learner/grpo.h"
#include "learner/optimizer.h"
#include "learner/policy_update.h"
#include "nlohmann/json.hpp"

namespace microrl::learner {
namespace {

struct Mode {
  bool packing;
  bool share_prompts;
  int64_t micro_batch_tokens;
};

class UpdateParityTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("MICRORL_UPDATE_ORACLE_DIR");
    ASSERT_NE(dir, nullptr) << "MICRORL_UPDATE_ORACLE_DIR is not set";
    dir_ = dir;
    absl::StatusOr<std::unique_ptr<model::Decoder>> decoder =
        model::Decoder::Load(dir_ + "/model", {});
    ASSERT_TRUE(decoder.ok()) << decoder.status();
    decoder_ = *std::move(decoder);
    absl::StatusOr<std::unique_ptr<model::LoraAdapter>> adapter =
        model::LoraAdapter::LoadPeft(dir_ + "/adapter", decoder_->config(),
                                     at::kCPU);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    adapter_ = *std::move(adapter);
    adapter_->SetRequiresGrad(true);
    absl::StatusOr<std::map<std::string, at::Tensor>> expected =
        model::ReadTensors(dir_ + "/expected.safetensors");
    ASSERT_TRUE(expected.ok()) << expected.status();
    expected_ = *std::move(expected);
    std::ifstream in(dir_ + "/batch.json");
    std::stringstream text;
    text << in.rdbuf();
    const nlohmann::json batch = nlohmann::json::parse(text.str());
    for (const nlohmann::json& s : batch["samples"]) {
      Sample sample;
      sample.prompt = s["prompt"].get<std::vector<int32_t>>();
      sample.completion = s["completion"].get<std::vector<int32_t>>();
      sample.rollout_logprobs = s["old_logprobs"].get<std::vector<float>>();
      sample.advantage = s["advantage"].get<float>();
      samples_.push_back(std::move(sample));
    }
    options_.temperature = batch["temperature"].get<double>();
    options_.loss.policy.clip_low = batch["clip"].get<double>();
    options_.loss.policy.clip_high = batch["clip"].get<double>();
    options_.loss.policy.dual_clip = 0;  // TRL has none
    options_.loss.policy.aggregation = LossAggregation::kTokenMean;
    options_.schedule.lr = batch["lr"].get<double>();
    options_.max_grad_norm = batch["max_grad_norm"].get<double>();
    options_.packing = GetParam().packing;
    options_.share_prompts = GetParam().share_prompts;
    options_.micro_batch_tokens = GetParam().micro_batch_tokens;
  }

  // "0.q_proj.lora_A" -> the adapter's tensor.
  std::map<std::string, at::Tensor> Weights() const {
    std::map<std::string, at::Tensor> out;
    for (int64_t layer = 0; layer < adapter_->num_layers(); ++layer) {
      for (int m = 0; m < model::kNumLoraModules; ++m) {
        const auto module = static_cast<model::LoraModule>(m);
        const model::LoraLinear* linear = adapter_->Find(layer, module);
        if (linear == nullptr) continue;
        const std::string name =
            std::to_string(layer) + "." + model::LoraModuleName(module);
        out[name + ".lora_A"] = linear->a;
        out[name + ".lora_B"] = linear->b;
      }
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<model::Decoder> decoder_;
  std::unique_ptr<model::LoraAdapter> adapter_;
  std::map<std::string, at::Tensor> expected_;
  std::vector<Sample> samples_;
  UpdateOptions options_;
};

TEST_P(UpdateParityTest, LossAndGradientsMatchPeft) {
  AdamW optimizer(adapter_->Parameters(), {});
  PolicyUpdater updater(*decoder_, *adapter_, optimizer, options_);
  LossNormalizer normalizer;
  for (const Sample& s : samples_) normalizer.tokens += s.completion.size();
  normalizer.sequences = static_cast<double>(samples_.size());
  // The micro-batches Update would run, each scored with gradient and its
  // loss added, as Update does.
  const std::vector<std::vector<size_t>> micro_batches =
      updater.MicroBatches(samples_, 0, samples_.size());
  if (GetParam().micro_batch_tokens < (1 << 20)) {
    // The small budgets cut a group: its prompt is in two micro-batches.
    std::map<std::vector<int32_t>, std::set<size_t>> holders;
    for (size_t m = 0; m < micro_batches.size(); ++m) {
      for (size_t i : micro_batches[m]) holders[samples_[i].prompt].insert(m);
    }
    bool split = false;
    for (const auto& [prompt, where] : holders) split |= where.size() > 1;
    EXPECT_TRUE(split);
  } else {
    EXPECT_EQ(micro_batches.size(), 1u);
  }
  double loss = 0;
  for (const std::vector<size_t>& which : micro_batches) {
    std::vector<Sample> part;
    for (size_t i : which) part.push_back(samples_[i]);
    absl::StatusOr<PolicyUpdater::TokenTensors> scored =
        updater.Score(part, adapter_.get(), /*with_grad=*/true);
    ASSERT_TRUE(scored.ok()) << scored.status();
    at::Tensor old = at::zeros_like(scored->logprobs);
    std::vector<float> advantages;
    for (size_t b = 0; b < part.size(); ++b) {
      const std::vector<float>& row = part[b].rollout_logprobs;
      old[b].narrow(0, 0, row.size()).copy_(at::tensor(row));
      advantages.push_back(part[b].advantage);
    }
    const GrpoLossResult result =
        GrpoLoss(scored->logprobs, old, {}, {}, at::tensor(advantages),
                 scored->mask, options_.loss, normalizer);
    result.loss.backward();
    loss += result.loss.item<double>();
  }
  EXPECT_NEAR(loss, expected_.at("loss").item<double>(), 1e-6);
  int compared = 0;
  for (const auto& [name, weight] : Weights()) {
    const at::Tensor want = expected_.at("grad." + name);
    ASSERT_TRUE(weight.grad().defined()) << name;
    EXPECT_LT((weight.grad() - want).abs().max().item<double>(),
              1e-6 + 1e-4 * want.abs().max().item<double>())
        << name;
    ++compared;
  }
  EXPECT_EQ(compared, 2 * 7 * decoder_->config().num_layers);
}

TEST_P(UpdateParityTest, UpdatedAdapterMatchesPeftAndAdamW) {
  AdamW optimizer(adapter_->Parameters(), {});
  PolicyUpdater updater(*decoder_, *adapter_, optimizer, options_);
  int64_t step = 0;
  absl::StatusOr<UpdateStats> stats = updater.Update(samples_, step);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->optimizer_steps, 1);
  EXPECT_NEAR(stats->loss, expected_.at("loss").item<double>(), 1e-6);
  for (const auto& [name, weight] : Weights()) {
    EXPECT_LT(
        (weight - expected_.at("updated." + name)).abs().max().item<double>(),
        2e-6)
        << name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, UpdateParityTest,
    ::testing::Values(Mode{true, true, 1 << 20}, Mode{true, true, 16},
                      Mode{true, false, 1 << 20}, Mode{true, false, 16},
                      Mode{false, false, 1 << 20}, Mode{false, false, 30}),
    [](const ::testing::TestParamInfo<Mode>& info) {
      return std::string(info.param.packing ? "Packed" : "Padded") +
             (info.param.share_prompts ? "SharedPrompts" : "") +
             (info.param.micro_batch_tokens < (1 << 20) ? "SmallMicroBatches"
                                                        : "OneMicroBatch");
    });

}  // namespace
}  // namespace microrl::learner
