// Parity with Hugging Face transformers and PEFT (label parity). The expected
// outputs come from tests/common/model/parity_oracle.py, run by ctest before
// this test; MICRORL_PARITY_DIR names its output. This test also saves adapters
// and logits under $MICRORL_PARITY_DIR/ours/ for the oracle's `check` step (our
// adapters loaded by PEFT).
#include <ATen/ATen.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "common/model/decoder.h"
#include "common/model/lora.h"
#include "common/model/tensor_io.h"
#include "common/model/token_stats.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/decoder_step.h"

namespace microrl::model {
namespace {

using ::microrl::testing::DecoderTestPeer;

std::string ParityDir() {
  const char* dir = std::getenv("MICRORL_PARITY_DIR");
  return dir == nullptr ? "" : dir;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

class ParityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(ParityDir().empty())
        << "MICRORL_PARITY_DIR is not set: run through ctest (the oracle makes "
           "the data)";
    dir_ = ParityDir() + "/" + GetParam();
    absl::StatusOr<std::unique_ptr<Decoder>> decoder =
        Decoder::Load(dir_ + "/model", {});
    ASSERT_TRUE(decoder.ok()) << decoder.status();
    decoder_ = *std::move(decoder);
    absl::StatusOr<std::map<std::string, at::Tensor>> expected =
        ReadTensors(dir_ + "/expected.safetensors");
    ASSERT_TRUE(expected.ok()) << expected.status();
    expected_ = *std::move(expected);
    std::ifstream in(dir_ + "/case.json");
    std::stringstream text;
    text << in.rdbuf();
    const nlohmann::json info = nlohmann::json::parse(text.str());
    lengths_ = info["lengths"].get<std::vector<int64_t>>();
    temperature_ = info["temperature"].get<double>();
  }

  const at::Tensor& Expected(const std::string& name) {
    const auto it = expected_.find(name);
    EXPECT_NE(it, expected_.end()) << name;
    return it->second;
  }
  at::Tensor Ids(size_t i) { return Expected("ids_" + std::to_string(i)); }

  std::unique_ptr<LoraAdapter> PeftAdapter() {
    absl::StatusOr<std::unique_ptr<LoraAdapter>> adapter =
        LoraAdapter::LoadPeft(dir_ + "/peft_adapter", decoder_->config(),
                              at::kCPU);
    EXPECT_TRUE(adapter.ok()) << adapter.status();
    return adapter.ok() ? *std::move(adapter) : nullptr;
  }

  at::Tensor SequenceLogits(size_t i, const LoraAdapter* adapter) {
    absl::StatusOr<at::Tensor> hidden =
        decoder_->Forward(Ids(i).unsqueeze(0), {adapter});
    EXPECT_TRUE(hidden.ok()) << hidden.status();
    return hidden.ok() ? decoder_->Logits(*hidden)[0] : at::Tensor();
  }

  std::string dir_;
  std::unique_ptr<Decoder> decoder_;
  std::map<std::string, at::Tensor> expected_;
  std::vector<int64_t> lengths_;
  double temperature_ = 1.0;
};

TEST_P(ParityTest, FullSequenceLogitsMatchTransformers) {
  for (size_t i = 0; i < lengths_.size(); ++i) {
    const at::Tensor logits = SequenceLogits(i, nullptr);
    ASSERT_TRUE(logits.defined());
    EXPECT_LE(MaxAbsDiff(logits, Expected("logits_" + std::to_string(i))), 1e-4)
        << "sequence " << i;
  }
}

TEST_P(ParityTest, PaddedBatchMatchesTransformers) {
  const int64_t longest = *std::max_element(lengths_.begin(), lengths_.end());
  at::Tensor batch =
      at::zeros({static_cast<int64_t>(lengths_.size()), longest}, at::kLong);
  for (size_t i = 0; i < lengths_.size(); ++i)
    batch[i].narrow(0, 0, lengths_[i]).copy_(Ids(i));
  absl::StatusOr<at::Tensor> hidden = decoder_->Forward(batch, {});
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  const at::Tensor logits = decoder_->Logits(*hidden);
  for (size_t i = 0; i < lengths_.size(); ++i) {
    const at::Tensor real = logits[i].narrow(0, 0, lengths_[i]);
    EXPECT_LE(MaxAbsDiff(real, Expected("logits_" + std::to_string(i))), 1e-4)
        << i;
    EXPECT_LE(
        MaxAbsDiff(real, Expected("batch_logits")[i].narrow(0, 0, lengths_[i])),
        1e-4);
  }
}

// Prefills prompts of different lengths in one step, then decodes one token
// per step for the rows still running; each step's logits must equal the full
// forward's at that position. `slots` maps rows to cache slots.
void CheckDecode(ParityTest* test, const Decoder& decoder,
                 const std::vector<at::Tensor>& ids,
                 const std::vector<at::Tensor>& expected,
                 const std::vector<int64_t>& prompts,
                 const std::vector<int64_t>& slot_of_row,
                 const LoraAdapter* adapter) {
  absl::StatusOr<KvCache> cache =
      KvCache::Create(decoder.config(), {4, 16, at::kCPU, at::kFloat});
  ASSERT_TRUE(cache.ok()) << cache.status();
  const int64_t rows = static_cast<int64_t>(ids.size());
  const int64_t longest_prompt =
      *std::max_element(prompts.begin(), prompts.end());
  at::Tensor prompt_batch = at::zeros({rows, longest_prompt}, at::kLong);
  for (int64_t r = 0; r < rows; ++r) {
    prompt_batch[r]
        .narrow(0, 0, prompts[r])
        .copy_(ids[r].narrow(0, 0, prompts[r]));
  }
  absl::StatusOr<at::Tensor> hidden = DecoderTestPeer::Step(
      decoder, prompt_batch, slot_of_row, prompts, *cache, {adapter});
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  for (int64_t r = 0; r < rows; ++r) {
    const at::Tensor logits =
        decoder.Logits((*hidden)[r].narrow(0, 0, prompts[r]));
    EXPECT_LE(MaxAbsDiff(logits, expected[r].narrow(0, 0, prompts[r])), 1e-4)
        << "prefill " << r;
  }
  std::vector<int64_t> position = prompts;
  while (true) {
    std::vector<int64_t> active, slots;
    for (int64_t r = 0; r < rows; ++r) {
      if (position[r] < ids[r].size(0)) {
        active.push_back(r);
        slots.push_back(slot_of_row[r]);
      }
    }
    if (active.empty()) break;
    at::Tensor step =
        at::empty({static_cast<int64_t>(active.size()), 1}, at::kLong);
    for (size_t k = 0; k < active.size(); ++k)
      step[k][0] = ids[active[k]][position[active[k]]];
    hidden = DecoderTestPeer::Step(decoder, step, slots,
                                   std::vector<int64_t>(active.size(), 1),
                                   *cache, {adapter});
    ASSERT_TRUE(hidden.ok()) << hidden.status();
    for (size_t k = 0; k < active.size(); ++k) {
      const int64_t r = active[k];
      EXPECT_LE(
          MaxAbsDiff(decoder.Logits((*hidden)[k][0]), expected[r][position[r]]),
          1e-4)
          << "row " << r << " position " << position[r];
      EXPECT_EQ(cache->length(slot_of_row[r]), position[r] + 1);
      ++position[r];
    }
  }
}

TEST_P(ParityTest, StepByStepDecodeWithTheCacheMatchesTransformers) {
  std::vector<at::Tensor> ids, expected;
  for (size_t i = 0; i < lengths_.size(); ++i) {
    ids.push_back(Ids(i));
    expected.push_back(Expected("logits_" + std::to_string(i)));
  }
  // Consecutive slots (views of the cache), then scattered ones (gathered).
  CheckDecode(this, *decoder_, ids, expected, {3, 5, 1}, {0, 1, 2}, nullptr);
  CheckDecode(this, *decoder_, ids, expected, {2, 1, 2}, {3, 0, 2}, nullptr);
}

TEST_P(ParityTest, PeftAdapterMatchesPeftInForwardAndDecode) {
  std::unique_ptr<LoraAdapter> adapter = PeftAdapter();
  ASSERT_NE(adapter, nullptr);
  std::vector<at::Tensor> ids, expected;
  for (size_t i = 0; i < lengths_.size(); ++i) {
    const at::Tensor logits = SequenceLogits(i, adapter.get());
    ASSERT_TRUE(logits.defined());
    EXPECT_LE(MaxAbsDiff(logits, Expected("peft_logits_" + std::to_string(i))),
              1e-4)
        << i;
    // The adapter must matter: the base model's logits differ.
    EXPECT_GT(MaxAbsDiff(logits, Expected("logits_" + std::to_string(i))), 1e-3)
        << i;
    ids.push_back(Ids(i));
    expected.push_back(Expected("peft_logits_" + std::to_string(i)));
  }
  CheckDecode(this, *decoder_, ids, expected, {4, 2, 3}, {1, 2, 3},
              adapter.get());
}

TEST_P(ParityTest, LogprobsEntropyAndLoraGradientsMatchPeftAutograd) {
  for (const bool checkpointing : {false, true}) {
    SCOPED_TRACE(checkpointing ? "with gradient checkpointing"
                               : "without checkpointing");
    std::unique_ptr<LoraAdapter> adapter = PeftAdapter();
    ASSERT_NE(adapter, nullptr);
    adapter->SetRequiresGrad(true);
    at::Tensor loss = at::zeros({}, at::kFloat);
    for (size_t i = 0; i < lengths_.size(); ++i) {
      const std::string n = std::to_string(i);
      const at::Tensor ids = Ids(i);
      absl::StatusOr<at::Tensor> hidden =
          decoder_->Forward(ids.unsqueeze(0), {adapter.get(), checkpointing});
      ASSERT_TRUE(hidden.ok()) << hidden.status();
      const int64_t steps = ids.size(0) - 1;
      absl::StatusOr<TokenStats> stats = ComputeTokenStats(
          (*hidden)[0].narrow(0, 0, steps), decoder_->lm_head(),
          ids.narrow(0, 1, steps), temperature_, /*chunk_rows=*/5);
      ASSERT_TRUE(stats.ok()) << stats.status();
      EXPECT_LE(MaxAbsDiff(stats->logprobs, Expected("peft_logprobs_" + n)),
                1e-5);
      EXPECT_LE(MaxAbsDiff(stats->entropy, Expected("peft_entropy_" + n)),
                1e-5);
      loss = loss + (Expected("weight_logprobs_" + n) * stats->logprobs).sum() +
             (Expected("weight_entropy_" + n) * stats->entropy).sum();
    }
    loss.backward();
    int compared = 0;
    for (int64_t layer = 0; layer < adapter->num_layers(); ++layer) {
      for (int m = 0; m < kNumLoraModules; ++m) {
        const auto module = static_cast<LoraModule>(m);
        const LoraLinear* linear = adapter->Find(layer, module);
        ASSERT_NE(linear, nullptr);
        for (const bool is_a : {true, false}) {
          const at::Tensor& ours = is_a ? linear->a.grad() : linear->b.grad();
          const at::Tensor& theirs =
              Expected("grad." + PeftTensorName(layer, module, is_a));
          ASSERT_TRUE(ours.defined()) << PeftTensorName(layer, module, is_a);
          const double relative =
              (ours.to(at::kDouble) - theirs.to(at::kDouble))
                  .norm()
                  .item<double>() /
              theirs.to(at::kDouble).norm().item<double>();
          EXPECT_LE(relative, 1e-5) << PeftTensorName(layer, module, is_a);
          ++compared;
        }
      }
    }
    EXPECT_EQ(compared, 2 * kNumLoraModules * decoder_->config().num_layers);
  }
}

TEST_P(ParityTest, SavesAdaptersThatLoadBackAndForPeftsCheck) {
  absl::StatusOr<std::unique_ptr<LoraAdapter>> adapter =
      LoraAdapter::Create(decoder_->config(), {4, 8.0}, at::kCPU, /*seed=*/7);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  // B starts at zero; give it values so the adapter changes the outputs.
  at::manual_seed(3);
  for (int64_t layer = 0; layer < (*adapter)->num_layers(); ++layer) {
    for (int m = 0; m < kNumLoraModules; ++m) {
      LoraLinear* linear = (*adapter)->Find(layer, static_cast<LoraModule>(m));
      at::NoGradGuard no_grad;
      linear->b.copy_(at::randn(linear->b.sizes()) * 0.1);
    }
  }
  const std::string ours = ParityDir() + "/ours";
  mkdir(ours.c_str(), 0755);
  const std::string out = ours + "/" + GetParam();
  mkdir(out.c_str(), 0755);
  ASSERT_TRUE((*adapter)->SavePeft(out + "/adapter", dir_ + "/model").ok());
  absl::StatusOr<std::unique_ptr<LoraAdapter>> reloaded =
      LoraAdapter::LoadPeft(out + "/adapter", decoder_->config(), at::kCPU);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  NamedTensors logits;
  for (size_t i = 0; i < lengths_.size(); ++i) {
    const at::Tensor with_ours = SequenceLogits(i, adapter->get());
    const at::Tensor with_reloaded = SequenceLogits(i, reloaded->get());
    EXPECT_EQ(MaxAbsDiff(with_ours, with_reloaded), 0.0);
    logits.emplace_back("logits_" + std::to_string(i), with_ours);
  }
  ASSERT_TRUE(WriteTensors(out + "/logits.safetensors", logits).ok());
}

INSTANTIATE_TEST_SUITE_P(Architectures, ParityTest,
                         ::testing::Values("qwen2", "qwen2_sharded", "qwen3",
                                           "llama3"));

}  // namespace
}  // namespace microrl::model
