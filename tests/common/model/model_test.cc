// Model-core behaviour that needs no oracle: errors, chunking, checkpointing,
// LoRA initialization and round trips, the KV cache. Parity with transformers
// and PEFT is in parity_test.cc.
#include <ATen/ATen.h>
#include <torch/types.h>

#include <cmath>
#include <fstream>

#include "common/model/checkpoint.h"
#include "common/model/decoder.h"
#include "common/model/lora.h"
#include "common/model/lora_linear.h"
#include "common/model/tensor_io.h"
#include "common/model/token_stats.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/decoder_step.h"
#include "tests/support/subprocess.h"
#include "tests/support/tiny_model.h"

namespace microrl::model {
namespace {

using ::testing::HasSubstr;

using ::microrl::testing::DecoderTestPeer;
using ::microrl::testing::RandomAdapter;
using ::microrl::testing::TinyConfig;
using ::microrl::testing::TinyDecoder;
using ::microrl::testing::TinyTensors;

at::Tensor Ids() {
  return torch::tensor({{3, 17, 5, 42, 9, 1, 30}}, torch::kLong);
}

// A float32 KV cache on the CPU for `decoder`: `slots` slots of `capacity`.
absl::StatusOr<KvCache> CpuCache(const Decoder& decoder, int64_t slots,
                                 int64_t capacity) {
  return KvCache::Create(decoder.config(),
                         {slots, capacity, at::kCPU, at::kFloat});
}

TEST(DecoderTest, MissingOrMisShapedTensorsAreNamed) {
  const ModelConfig config = TinyConfig();
  std::map<std::string, at::Tensor> tensors = TinyTensors(config);
  tensors.erase("model.layers.1.self_attn.k_proj.bias");
  absl::Status status = Decoder::FromTensors(config, tensors, {}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(status.message()),
      HasSubstr("missing tensor \"model.layers.1.self_attn.k_proj.bias\""));

  tensors = TinyTensors(config);
  tensors["model.layers.0.mlp.up_proj.weight"] = at::zeros({48, 31});
  status = Decoder::FromTensors(config, tensors, {}).status();
  EXPECT_THAT(
      std::string(status.message()),
      HasSubstr("\"model.layers.0.mlp.up_proj.weight\" has shape [48, 31], the "
                "config implies [48, 32]"));

  tensors = TinyTensors(config);
  tensors["model.norm.weight"] = at::zeros({32}, at::kLong);
  EXPECT_THAT(
      std::string(Decoder::FromTensors(config, tensors, {}).status().message()),
      HasSubstr("not floating point"));
}

TEST(DecoderTest, LoadsADirectoryAndReportsFileProblems) {
  const std::string dir = testing::MakeTempDir();
  EXPECT_EQ(OpenCheckpoint(dir).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir + "/model.safetensors") << "garbage";
  EXPECT_THAT(std::string(OpenCheckpoint(dir).status().message()),
              HasSubstr(dir + "/model.safetensors"));
  std::remove((dir + "/model.safetensors").c_str());
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"weight_map": {"model.norm.weight": "../etc/passwd"}})";
  EXPECT_THAT(std::string(OpenCheckpoint(dir).status().message()),
              HasSubstr("not a plain file name"));
  NamedTensors shard = {{"model.norm.weight", at::ones({4})}};
  ASSERT_TRUE(WriteTensors(dir + "/a.safetensors", shard).ok());
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"weight_map": {"model.norm.weight": "a.safetensors", "lm_head.weight": "a.safetensors"}})";
  EXPECT_THAT(
      std::string(OpenCheckpoint(dir).status().message()),
      HasSubstr(
          "the index lists tensor \"lm_head.weight\" here, but it is absent"));
}

TEST(DecoderTest, LoadsBfloat16CheckpointsInFloat32AndBfloat16) {
  const ModelConfig config = TinyConfig();
  const std::string dir = testing::MakeTempDir();
  std::ofstream(dir + "/config.json")
      << R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 50, "hidden_size": 32,
             "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "tie_word_embeddings": false})";
  NamedTensors bf16;
  std::map<std::string, at::Tensor> rounded;
  for (const auto& [name, tensor] : TinyTensors(config)) {
    bf16.emplace_back(name, tensor.to(at::kBFloat16));
    rounded[name] = tensor.to(at::kBFloat16).to(at::kFloat);
  }
  ASSERT_TRUE(WriteTensors(dir + "/model.safetensors", bf16).ok());
  absl::StatusOr<std::unique_ptr<Decoder>> as_float = Decoder::Load(dir, {});
  ASSERT_TRUE(as_float.ok()) << as_float.status();
  absl::StatusOr<std::unique_ptr<Decoder>> reference =
      Decoder::FromTensors(config, rounded, {});
  ASSERT_TRUE(reference.ok());
  EXPECT_TRUE(at::equal(*(*as_float)->Forward(Ids(), {}),
                        *(*reference)->Forward(Ids(), {})));
  absl::StatusOr<std::unique_ptr<Decoder>> as_bf16 =
      Decoder::Load(dir, {at::kCPU, at::kBFloat16});
  ASSERT_TRUE(as_bf16.ok()) << as_bf16.status();
  const at::Tensor hidden = *(*as_bf16)->Forward(Ids(), {});
  EXPECT_EQ(hidden.scalar_type(), at::kBFloat16);
  EXPECT_LT((hidden.to(at::kFloat) - *(*reference)->Forward(Ids(), {}))
                .abs()
                .max()
                .item<double>(),
            0.1);
}

TEST(DecoderTest, StepRefusesBadSlotsAndOverflowingTheCache) {
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  ASSERT_NE(decoder, nullptr);
  absl::StatusOr<KvCache> cache = CpuCache(*decoder, 2, 8);
  ASSERT_TRUE(cache.ok());
  const at::Tensor ids = at::ones({1, 5}, at::kLong);
  EXPECT_EQ(DecoderTestPeer::Step(*decoder, ids, {2}, {5}, *cache, {})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecoderTestPeer::Step(*decoder, ids, {0}, {6}, *cache, {})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(DecoderTestPeer::Step(*decoder, ids, {0}, {5}, *cache, {}).ok());
  EXPECT_EQ(cache->length(0), 5);
  const absl::Status overflow =
      DecoderTestPeer::Step(*decoder, ids, {0}, {5}, *cache, {}).status();
  EXPECT_EQ(overflow.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(overflow.message()), HasSubstr("capacity of 8"));
  EXPECT_EQ(cache->length(0), 5);  // unchanged by the refused step
}

TEST(DecoderTest, CopiedPrefixDecodesLikeTheOriginal) {
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  ASSERT_NE(decoder, nullptr);
  absl::StatusOr<KvCache> cache = CpuCache(*decoder, 3, 16);
  ASSERT_TRUE(cache.ok());
  ASSERT_TRUE(
      DecoderTestPeer::Step(*decoder, Ids(), {0}, {7}, *cache, {}).ok());
  cache->CopyPrefix(0, 2, 7);  // one prompt, shared by a second sequence
  absl::StatusOr<at::Tensor> hidden =
      DecoderTestPeer::Step(*decoder, torch::tensor({{11}, {11}}, torch::kLong),
                            {0, 2}, {1, 1}, *cache, {});
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  EXPECT_TRUE(at::allclose((*hidden)[0], (*hidden)[1], 1e-6, 1e-6));
  // And equal to running prompt + token from scratch.
  absl::StatusOr<at::Tensor> full = decoder->Forward(
      at::cat({Ids(), torch::tensor({{11}}, torch::kLong)}, 1), {});
  ASSERT_TRUE(full.ok());
  EXPECT_TRUE(at::allclose((*hidden)[0][0], (*full)[0][7], 1e-5, 1e-5));
}

TEST(DecoderTest, CachedAttentionWithGroupedHeadsMatchesTheFullForward) {
  // The tiny model has 4 query heads on 2 KV heads. A prompt, then two decode
  // rows in non-consecutive slots (a gathered cache) and two in consecutive
  // ones (a view), in float32 and bfloat16, against Forward (SDPA, causal).
  const ModelConfig config = TinyConfig();
  ASSERT_LT(config.num_kv_heads, config.num_heads);
  const at::Tensor token = torch::tensor({{11}, {11}}, torch::kLong);
  const at::Tensor full =
      *TinyDecoder()->Forward(at::cat({Ids(), token.narrow(0, 0, 1)}, 1), {});
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    absl::StatusOr<std::unique_ptr<Decoder>> decoder =
        Decoder::FromTensors(config, TinyTensors(config), {at::kCPU, dtype});
    ASSERT_TRUE(decoder.ok()) << decoder.status();
    absl::StatusOr<KvCache> cache =
        KvCache::Create(config, {5, 16, at::kCPU, dtype});
    ASSERT_TRUE(cache.ok());
    ASSERT_TRUE(
        DecoderTestPeer::Step(**decoder, Ids(), {0}, {7}, *cache, {}).ok());
    for (int64_t slot : {1, 2, 3, 4}) cache->CopyPrefix(0, slot, 7);
    const double tolerance = dtype == at::kFloat ? 1e-5 : 0.1;
    for (const std::vector<int64_t>& slots :
         {std::vector<int64_t>{0, 2}, std::vector<int64_t>{3, 4}}) {
      absl::StatusOr<at::Tensor> hidden =
          DecoderTestPeer::Step(**decoder, token, slots, {1, 1}, *cache, {});
      ASSERT_TRUE(hidden.ok()) << hidden.status();
      for (int row = 0; row < 2; ++row) {
        EXPECT_TRUE(at::allclose((*hidden)[row][0].to(at::kFloat), full[0][7],
                                 tolerance, tolerance))
            << (*hidden)[row][0].to(at::kFloat) - full[0][7];
      }
    }
  }
}

TEST(DecoderTest, PrefillAtWritesPromptsThatAttendToThemselvesOnly) {
  // Two prompts in one slot at offsets 0 and 7, a third in another slot: each
  // row's hidden states are its prompt's alone (as Forward gives them).
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  ASSERT_NE(decoder, nullptr);
  absl::StatusOr<KvCache> cache = CpuCache(*decoder, 3, 16);
  ASSERT_TRUE(cache.ok());
  const at::Tensor ids = at::cat({Ids(), Ids().flip(1), Ids()});
  absl::StatusOr<at::Tensor> hidden =
      decoder->PrefillAt(ids, {2, 2, 0}, {0, 7, 0}, {7, 4, 5}, *cache, {});
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  const at::Tensor whole = *decoder->Forward(Ids(), {});
  const at::Tensor flipped =
      *decoder->Forward(Ids().flip(1).narrow(1, 0, 4), {});
  const at::Tensor part = *decoder->Forward(Ids().narrow(1, 0, 5), {});
  EXPECT_TRUE(at::allclose((*hidden)[0], whole[0], 1e-5, 1e-5));
  EXPECT_TRUE(
      at::allclose((*hidden)[1].narrow(0, 0, 4), flipped[0], 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose((*hidden)[2].narrow(0, 0, 5), part[0], 1e-5, 1e-5));
  EXPECT_EQ(cache->length(2), 11);
  EXPECT_EQ(cache->length(0), 5);
  // No room before the slot's last position (where padding goes).
  EXPECT_EQ(
      decoder->PrefillAt(Ids(), {1}, {9}, {7}, *cache, {}).status().code(),
      absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(
      decoder->PrefillAt(Ids(), {3}, {0}, {7}, *cache, {}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(DecoderTest, DecodeOnDeviceContinuesPrefilledSlotsLikeForward) {
  // Slots 0 and 1 hold a 7- and a 5-token prompt; one token decoded in each,
  // over exact and bucketed key lengths, equals the full forward's last state.
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  ASSERT_NE(decoder, nullptr);
  const at::Tensor next = torch::tensor({{11}, {23}}, torch::kLong);
  const at::Tensor a = at::cat({Ids(), next.narrow(0, 0, 1)}, 1);
  const at::Tensor b =
      at::cat({Ids().narrow(1, 0, 5), next.narrow(0, 1, 1)}, 1);
  const at::Tensor want_a = (*decoder->Forward(a, {}))[0][7];
  const at::Tensor want_b = (*decoder->Forward(b, {}))[0][5];
  for (int64_t key_length : {8, 16}) {
    SCOPED_TRACE(key_length);
    absl::StatusOr<KvCache> cache = CpuCache(*decoder, 2, 16);
    ASSERT_TRUE(cache.ok());
    ASSERT_TRUE(decoder
                    ->PrefillAt(at::cat({Ids(), Ids()}), {0, 1}, {0, 0}, {7, 5},
                                *cache, {})
                    .ok());
    const at::Tensor hidden =
        decoder->DecodeOnDevice(next, torch::tensor({7, 5}, torch::kLong),
                                /*first_slot=*/0, key_length, *cache, {});
    ASSERT_EQ(hidden.dim(), 3);
    EXPECT_EQ(hidden.size(0), 2);
    EXPECT_EQ(hidden.size(1), 1);
    EXPECT_TRUE(at::allclose(hidden[0][0], want_a, 1e-5, 1e-5))
        << (hidden[0][0] - want_a).abs().max();
    EXPECT_TRUE(at::allclose(hidden[1][0], want_b, 1e-5, 1e-5))
        << (hidden[1][0] - want_b).abs().max();
    // The caller advances the lengths.
    EXPECT_EQ(cache->length(0), 7);
  }
}

TEST(TokenStatsTest, ChunkedEqualsUnchunkedInValuesAndGradients) {
  at::manual_seed(5);
  const at::Tensor lm_head = at::randn({50, 16});
  const at::Tensor targets = at::randint(0, 50, {11}, at::kLong);
  for (const double temperature : {1.0, 0.6}) {
    // Reference: full logits and autograd.
    at::Tensor hidden_ref = at::randn({11, 16}).requires_grad_(true);
    const at::Tensor log_p =
        at::log_softmax(at::linear(hidden_ref, lm_head) / temperature, -1);
    const at::Tensor lp_ref = log_p.gather(1, targets.unsqueeze(1)).squeeze(1);
    const at::Tensor ent_ref = -(log_p.exp() * log_p).sum(-1);
    const at::Tensor w1 = at::randn({11});
    const at::Tensor w2 = at::randn({11});
    ((w1 * lp_ref).sum() + (w2 * ent_ref).sum()).backward();
    for (const int64_t chunk : {1, 3, 11, 64}) {
      at::Tensor hidden = hidden_ref.detach().clone().requires_grad_(true);
      absl::StatusOr<TokenStats> stats =
          ComputeTokenStats(hidden, lm_head, targets, temperature, chunk);
      ASSERT_TRUE(stats.ok()) << stats.status();
      EXPECT_TRUE(at::allclose(stats->logprobs, lp_ref, 1e-5, 1e-6)) << chunk;
      EXPECT_TRUE(at::allclose(stats->entropy, ent_ref, 1e-5, 1e-6)) << chunk;
      ((w1 * stats->logprobs).sum() + (w2 * stats->entropy).sum()).backward();
      EXPECT_TRUE(at::allclose(hidden.grad(), hidden_ref.grad(), 1e-5, 1e-6))
          << chunk;
    }
  }
}

TEST(TokenStatsTest, GradientsWithoutTheEntropysAreExact) {
  // entropy_grad = false: backward from the forward's expected embeddings,
  // equal to the reference; a gradient that reaches the entropy anyway still
  // gets the recomputing path, exact too.
  at::manual_seed(6);
  const at::Tensor lm_head = at::randn({50, 16});
  const at::Tensor targets = at::randint(0, 50, {11}, at::kLong);
  for (const double temperature : {1.0, 0.6}) {
    const at::Tensor start = at::randn({11, 16}) * 2;
    const at::Tensor w1 = at::randn({11});
    const at::Tensor w2 = at::randn({11});
    for (const bool with_entropy : {false, true}) {
      at::Tensor hidden_ref = start.clone().requires_grad_(true);
      const at::Tensor log_p =
          at::log_softmax(at::linear(hidden_ref, lm_head) / temperature, -1);
      at::Tensor loss =
          (w1 * log_p.gather(1, targets.unsqueeze(1)).squeeze(1)).sum();
      if (with_entropy)
        loss = loss + (w2 * -(log_p.exp() * log_p).sum(-1)).sum();
      loss.backward();
      for (const int64_t chunk : {1, 4, 64}) {
        SCOPED_TRACE(::testing::Message()
                     << "T " << temperature << " entropy " << with_entropy
                     << " chunk " << chunk);
        at::Tensor hidden = start.clone().requires_grad_(true);
        absl::StatusOr<TokenStats> stats =
            ComputeTokenStats(hidden, lm_head, targets, temperature, chunk,
                              /*entropy_grad=*/false);
        ASSERT_TRUE(stats.ok()) << stats.status();
        at::Tensor mine = (w1 * stats->logprobs).sum();
        if (with_entropy) mine = mine + (w2 * stats->entropy).sum();
        mine.backward();
        EXPECT_TRUE(at::allclose(hidden.grad(), hidden_ref.grad(), 1e-5, 1e-6))
            << (hidden.grad() - hidden_ref.grad()).abs().max();
      }
    }
  }
}

TEST(TokenStatsTest, RefusesBadArguments) {
  const at::Tensor hidden = at::randn({2, 4});
  const at::Tensor head = at::randn({10, 4});
  EXPECT_FALSE(ComputeTokenStats(hidden, head,
                                 torch::tensor({1, 10}, torch::kLong), 1.0, 4)
                   .ok());
  EXPECT_FALSE(ComputeTokenStats(hidden, head,
                                 torch::tensor({1, 2}, torch::kLong), 0.0, 4)
                   .ok());
  EXPECT_FALSE(
      ComputeTokenStats(hidden, head, torch::tensor({1}, torch::kLong), 1.0, 4)
          .ok());
  EXPECT_FALSE(ComputeTokenStats(hidden, head,
                                 torch::tensor({1, 2}, torch::kLong), 1.0, 0)
                   .ok());
  EXPECT_EQ(ChunkRowsForBudget(151936), 220);
}

TEST(GradientCheckpointingTest, GivesTheSameGradientsAsPlainBackward) {
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  ASSERT_NE(decoder, nullptr);
  std::vector<std::vector<at::Tensor>> grads;
  for (const bool checkpointing : {false, true}) {
    std::unique_ptr<LoraAdapter> adapter = RandomAdapter(decoder->config());
    absl::StatusOr<at::Tensor> hidden =
        decoder->Forward(Ids(), {adapter.get(), checkpointing});
    ASSERT_TRUE(hidden.ok()) << hidden.status();
    absl::StatusOr<TokenStats> stats =
        ComputeTokenStats((*hidden)[0].narrow(0, 0, 6), decoder->lm_head(),
                          Ids()[0].narrow(0, 1, 6), 1.0, 4);
    ASSERT_TRUE(stats.ok());
    stats->logprobs.sum().backward();
    std::vector<at::Tensor> g;
    for (const at::Tensor& p : adapter->Parameters()) {
      ASSERT_TRUE(p.grad().defined());
      g.push_back(p.grad().clone());
    }
    grads.push_back(g);
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) {
    EXPECT_TRUE(at::allclose(grads[0][i], grads[1][i], 1e-5, 1e-7)) << i;
  }
}

TEST(LoraTest, FreshAdapterIsANoOpWithKaimingUniformA) {
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  ASSERT_NE(decoder, nullptr);
  absl::StatusOr<std::unique_ptr<LoraAdapter>> adapter =
      LoraAdapter::Create(decoder->config(), {8, 16.0}, at::kCPU, 42);
  ASSERT_TRUE(adapter.ok());
  const LoraLinear* q = (*adapter)->Find(0, LoraModule::kQ);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->a.sizes(), (at::IntArrayRef{8, 32}));
  EXPECT_EQ(q->b.sizes(), (at::IntArrayRef{32, 8}));
  EXPECT_LE(q->a.abs().max().item<double>(), 1.0 / std::sqrt(32.0));
  EXPECT_GT(q->a.abs().max().item<double>(), 0.5 / std::sqrt(32.0));
  EXPECT_EQ(q->b.abs().sum().item<double>(), 0.0);
  EXPECT_DOUBLE_EQ(q->scale, 2.0);
  EXPECT_TRUE(q->a.requires_grad());
  // 2 layers x (q, k, v, o, gate, up, down) with rank 8.
  const int64_t per_layer =
      8 * ((32 + 32) + (32 + 16) * 2 + (32 + 32) + (32 + 48) * 2 + (48 + 32));
  EXPECT_EQ((*adapter)->NumParameters(), 2 * per_layer);
  absl::StatusOr<at::Tensor> base = decoder->Forward(Ids(), {});
  absl::StatusOr<at::Tensor> with = decoder->Forward(Ids(), {adapter->get()});
  // Up to rounding: training runs each fused part as a product of its own.
  EXPECT_LT((*base - with->detach()).abs().max().item<double>(), 1e-5);
  // Same seed, same A; rsLoRA scale alpha / sqrt(r).
  absl::StatusOr<std::unique_ptr<LoraAdapter>> again = LoraAdapter::Create(
      decoder->config(), {8, 16.0, {LoraModule::kQ}, true}, at::kCPU, 42);
  EXPECT_TRUE(at::equal((*again)->Find(0, LoraModule::kQ)->a, q->a));
  EXPECT_DOUBLE_EQ((*again)->Find(0, LoraModule::kQ)->scale,
                   16.0 / std::sqrt(8.0));
  EXPECT_EQ((*again)->Find(0, LoraModule::kK), nullptr);
  EXPECT_FALSE(
      LoraAdapter::Create(decoder->config(), {0, 16.0}, at::kCPU, 1).ok());
}

TEST(LoraTest, RoundTripsThroughPeftFilesAndBuffers) {
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  ASSERT_NE(decoder, nullptr);
  std::unique_ptr<LoraAdapter> adapter = RandomAdapter(
      decoder->config(), {4, 8.0, {LoraModule::kQ, LoraModule::kDown}, true});
  const std::string dir = testing::MakeTempDir() + "/adapter";
  ASSERT_TRUE(adapter->SavePeft(dir, "tiny").ok());
  absl::StatusOr<std::unique_ptr<LoraAdapter>> loaded =
      LoraAdapter::LoadPeft(dir, decoder->config(), at::kCPU);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE((*loaded)->config().use_rslora);
  EXPECT_EQ((*loaded)->config().targets,
            (std::vector<LoraModule>{LoraModule::kQ, LoraModule::kDown}));
  absl::StatusOr<std::string> bytes = adapter->PeftSafetensors();
  ASSERT_TRUE(bytes.ok());
  absl::StatusOr<std::shared_ptr<safetensors::SafetensorsFile>> file =
      safetensors::SafetensorsFile::FromBytes(*bytes, "grpc");
  ASSERT_TRUE(file.ok());
  absl::StatusOr<std::unique_ptr<LoraAdapter>> from_buffer =
      LoraAdapter::FromPeft(adapter->PeftConfigJson("tiny"), *file,
                            decoder->config(), at::kCPU);
  ASSERT_TRUE(from_buffer.ok()) << from_buffer.status();
  const at::Tensor expected =
      decoder->Forward(Ids(), {adapter.get()})->detach();
  EXPECT_TRUE(at::equal(expected, *decoder->Forward(Ids(), {loaded->get()})));
  EXPECT_TRUE(
      at::equal(expected, *decoder->Forward(Ids(), {from_buffer->get()})));
  EXPECT_FALSE(at::equal(expected, *decoder->Forward(Ids(), {})));
}

TEST(TensorIoTest, HostToDeviceCopiesValuesInTheirDtype) {
  std::vector<at::Device> devices = {at::kCPU};
  if (at::hasCUDA()) devices.emplace_back(at::kCUDA, 0);
  for (const at::Device& device : devices) {
    const at::Tensor ids = HostToDevice(
        std::vector<int64_t>{3, -1, int64_t{1} << 40}, at::kLong, device);
    EXPECT_EQ(ids.device(), device);
    EXPECT_TRUE(at::equal(
        ids.cpu(), torch::tensor({int64_t{3}, int64_t{-1}, int64_t{1} << 40})));
    const at::Tensor u =
        HostToDevice(std::vector<double>{0.25, 1e-300}, at::kDouble, device);
    EXPECT_EQ(u.cpu()[1].item<double>(), 1e-300);
    const at::Tensor flags =
        HostToDevice(std::vector<uint8_t>{1, 0, 1}, at::kByte, device);
    EXPECT_EQ(flags.sum().item<int64_t>(), 2);
    EXPECT_EQ(HostToDevice(std::vector<float>{}, at::kFloat, device).numel(),
              0);
  }
}

TEST(LoraTest, Bfloat16ComputeKeepsFloat32MasterWeights) {
  const ModelConfig config = TinyConfig();
  std::unique_ptr<Decoder> full = TinyDecoder();
  ASSERT_NE(full, nullptr);
  absl::StatusOr<std::unique_ptr<Decoder>> half = Decoder::FromTensors(
      config, TinyTensors(config), {at::kCPU, at::kBFloat16});
  ASSERT_TRUE(half.ok()) << half.status();
  std::unique_ptr<LoraAdapter> adapter = RandomAdapter(config);
  adapter->SetRequiresGrad(true);
  const at::Tensor expected = full->Forward(Ids(), {adapter.get()})->detach();
  RunOptions run;
  run.adapter = adapter.get();
  run.gradient_checkpointing = true;
  const at::Tensor hidden = *(*half)->Forward(Ids(), run);
  EXPECT_EQ(hidden.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::allclose(hidden.to(at::kFloat), expected, 0.05, 0.05));
  hidden.to(at::kFloat).pow(2).sum().backward();
  for (const at::Tensor& p : adapter->Parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().scalar_type(), at::kFloat);
  }
  EXPECT_GT(
      adapter->Find(0, LoraModule::kQ)->a.grad().abs().sum().item<double>(), 0);

  // Published in bfloat16 (half the bytes) and kept in bfloat16 by a rollout
  // server in bfloat16; the outputs match the float32 adapter's in bfloat16.
  const std::string f32 = *adapter->PeftSafetensors();
  absl::StatusOr<std::string> b16 = adapter->PeftSafetensors(at::kBFloat16);
  ASSERT_TRUE(b16.ok());
  EXPECT_LT(b16->size(), f32.size() * 6 / 10);
  absl::StatusOr<std::unique_ptr<LoraAdapter>> served = LoraAdapter::FromPeft(
      adapter->PeftConfigJson("tiny"),
      *safetensors::SafetensorsFile::FromBytes(*b16, "grpc"), config, at::kCPU,
      at::kBFloat16);
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ((*served)->Find(0, LoraModule::kQ)->a.scalar_type(), at::kBFloat16);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(
      at::allclose((*half)->Forward(Ids(), {served->get()})->to(at::kFloat),
                   expected, 0.05, 0.05));
}

TEST(LoraTest, FusedInputProjectionsKeepTheOutputs) {
  const ModelConfig config = TinyConfig();
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  ASSERT_NE(decoder, nullptr);
  // All modules (q/k/v and gate/up fused), and a subset (q/v fused; up alone,
  // so gate/up is not).
  for (const std::vector<LoraModule>& targets :
       {std::vector<LoraModule>{LoraModule::kQ, LoraModule::kK, LoraModule::kV,
                                LoraModule::kO, LoraModule::kGate,
                                LoraModule::kUp, LoraModule::kDown},
        std::vector<LoraModule>{LoraModule::kQ, LoraModule::kV,
                                LoraModule::kUp}}) {
    SCOPED_TRACE(targets.size());
    std::unique_ptr<LoraAdapter> adapter =
        RandomAdapter(config, {4, 8.0, targets});
    adapter->SetRequiresGrad(false);
    at::NoGradGuard no_grad;
    const at::Tensor expected = *decoder->Forward(Ids(), {adapter.get()});
    EXPECT_FALSE(adapter->FusedA(0, LoraGroup::kQkv).defined());
    adapter->FuseInputProjections();
    const at::Tensor& qkv = adapter->FusedA(1, LoraGroup::kQkv);
    ASSERT_TRUE(qkv.defined());
    const bool all = targets.size() == 7;
    EXPECT_EQ(qkv.size(0), all ? 12 : 8);
    EXPECT_EQ(adapter->FusedA(1, LoraGroup::kGateUp).defined(), all);
    // The modules' A are views of the fused tensor, in the group's order.
    const at::Tensor& v = adapter->Find(1, LoraModule::kV)->a;
    EXPECT_EQ(v.data_ptr(), qkv.narrow(0, all ? 8 : 4, 4).data_ptr());
    const at::Tensor fused = *decoder->Forward(Ids(), {adapter.get()});
    EXPECT_TRUE(at::allclose(fused, expected, 1e-5, 1e-5))
        << (fused - expected).abs().max().item<double>();
    // A copy into a module's A reaches the fused matmul.
    adapter->Find(1, LoraModule::kV)
        ->a.copy_(adapter->Find(1, LoraModule::kQ)->a * 3);
    EXPECT_TRUE(at::equal(qkv.narrow(0, all ? 8 : 4, 4),
                          adapter->Find(1, LoraModule::kQ)->a * 3));
    EXPECT_FALSE(at::allclose(*decoder->Forward(Ids(), {adapter.get()}),
                              expected, 1e-5, 1e-5));
  }
  // An adapter being trained is left as it is (autograd needs its leaves).
  std::unique_ptr<LoraAdapter> trained = RandomAdapter(config);
  trained->SetRequiresGrad(true);
  trained->FuseInputProjections();
  EXPECT_FALSE(trained->FusedA(0, LoraGroup::kQkv).defined());
}

// MKL's packed weights give LibTorch's products at every row count, with a
// bias and without, for few rows (packed) and many (LibTorch's own path).
TEST(PackedWeightTest, ProductsEqualLinear) {
  at::manual_seed(3);
  const at::Tensor weight = at::randn({96, 40});
  const at::Tensor bias = at::randn({96});
  if (!PackedProductsAvailable()) GTEST_SKIP() << "this LibTorch has no MKL";
  // Small weights stay unpacked unless asked.
  EXPECT_FALSE(PackWeight(weight).defined());
  const at::Tensor packed = PackWeight(weight, /*min_elements=*/0);
  ASSERT_TRUE(packed.defined());
  EXPECT_GT(PackedBytes(packed), 0);
  EXPECT_TRUE(PackWeight(at::randn({512, 512})).defined());
  EXPECT_FALSE(PackWeight(weight.to(at::kDouble), 0).defined());
  at::NoGradGuard no_grad;
  for (const int64_t rows : {int64_t{1}, int64_t{3}, int64_t{64}, int64_t{65},
                             kPackedMaxRows, int64_t{300}}) {
    SCOPED_TRACE(rows);
    const at::Tensor x = at::randn({rows, 1, 40});
    for (const at::Tensor& b : {at::Tensor(), bias}) {
      const at::Tensor want = at::linear(
          x, weight, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
      const at::Tensor got = BaseLinear(x, weight, b, packed);
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5))
          << (got - want).abs().max().item<double>();
    }
  }
}

// A decoder that packs its weights decodes as one that does not: base and a
// merged adapter (packed too; unadapted groups reuse the base's packed form).
TEST(PackedWeightTest, PackedDecoderDecodesTheSame) {
  const ModelConfig config = TinyConfig();
  std::unique_ptr<Decoder> plain = TinyDecoder();
  std::unique_ptr<Decoder> packed = TinyDecoder();
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(packed, nullptr);
  absl::StatusOr<int64_t> bytes = packed->PackWeights(/*min_elements=*/0);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  if (!packed->packs_weights()) GTEST_SKIP() << "this LibTorch has no MKL";
  EXPECT_GT(*bytes, 0);
  at::NoGradGuard no_grad;
  std::unique_ptr<LoraAdapter> adapter =
      RandomAdapter(config, {4, 8.0, {LoraModule::kK, LoraModule::kDown}});
  adapter->SetRequiresGrad(false);
  ASSERT_TRUE(packed->MergeAdapter(*adapter).ok());
  std::unique_ptr<LoraAdapter> other =
      RandomAdapter(config, {4, 8.0, {LoraModule::kK, LoraModule::kDown}});
  other->SetRequiresGrad(false);
  ASSERT_TRUE(packed->MergeAdapter(*other).ok());
  EXPECT_TRUE(adapter->merged()[0].qkv_packed.defined());
  EXPECT_FALSE(
      adapter->merged()[0].qkv_packed.is_same(other->merged()[0].qkv_packed));
  EXPECT_TRUE(
      adapter->merged()[0].o_packed.is_same(other->merged()[0].o_packed));
  const at::Tensor next = torch::tensor({{11}, {23}}, torch::kLong);
  for (const LoraAdapter* run :
       {static_cast<const LoraAdapter*>(nullptr),
        static_cast<const LoraAdapter*>(adapter.get())}) {
    SCOPED_TRACE(run != nullptr);
    std::vector<at::Tensor> logits;
    for (const Decoder* decoder : {plain.get(), packed.get()}) {
      absl::StatusOr<KvCache> cache = CpuCache(*decoder, 2, 16);
      ASSERT_TRUE(cache.ok());
      ASSERT_TRUE(decoder
                      ->PrefillAt(at::cat({Ids(), Ids()}), {0, 1}, {0, 0},
                                  {7, 5}, *cache, {run})
                      .ok());
      const at::Tensor hidden = decoder->DecodeOnDevice(
          next, torch::tensor({7, 5}, torch::kLong), /*first_slot=*/0,
          /*key_length=*/8, *cache, {run});
      logits.push_back(decoder->Logits(hidden.select(1, 0)));
    }
    EXPECT_TRUE(at::allclose(logits[0], logits[1], 1e-5, 1e-5))
        << (logits[0] - logits[1]).abs().max().item<double>();
  }
}

// Merged into a copy of the base weights (the rollout server on the CPU), an
// adapter gives the outputs of base + LoRA, and the base stays as it was.
TEST(LoraTest, MergedAdapterKeepsTheOutputs) {
  const ModelConfig config = TinyConfig();
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  ASSERT_NE(decoder, nullptr);
  at::NoGradGuard no_grad;
  const at::Tensor base = *decoder->Forward(Ids(), {});
  for (const std::vector<LoraModule>& targets :
       {std::vector<LoraModule>{LoraModule::kQ, LoraModule::kK, LoraModule::kV,
                                LoraModule::kO, LoraModule::kGate,
                                LoraModule::kUp, LoraModule::kDown},
        std::vector<LoraModule>{LoraModule::kK, LoraModule::kDown}}) {
    SCOPED_TRACE(targets.size());
    std::unique_ptr<LoraAdapter> adapter =
        RandomAdapter(config, {4, 8.0, targets});
    adapter->SetRequiresGrad(false);
    adapter->FuseInputProjections();
    const at::Tensor expected = *decoder->Forward(Ids(), {adapter.get()});
    ASSERT_FALSE(at::allclose(expected, base, 1e-3, 1e-3));
    EXPECT_EQ(adapter->MergedBytes(), 0);
    ASSERT_TRUE(decoder->MergeAdapter(*adapter).ok());
    ASSERT_EQ(adapter->merged().size(), config.num_layers);
    // One float32 copy of every linear weight.
    const int64_t h = config.hidden_size;
    const int64_t attention = config.num_heads * config.head_dim;
    const int64_t kv = config.num_kv_heads * config.head_dim;
    EXPECT_EQ(adapter->MergedBytes(),
              4 * config.num_layers *
                  ((attention + 2 * kv) * h + h * attention +
                   3 * h * config.intermediate_size));
    const at::Tensor merged = *decoder->Forward(Ids(), {adapter.get()});
    EXPECT_TRUE(at::allclose(merged, expected, 1e-5, 1e-5))
        << (merged - expected).abs().max().item<double>();
    EXPECT_TRUE(at::equal(*decoder->Forward(Ids(), {}), base));
  }
  // Groups without an adapted module keep the base's tensor, not a copy: two
  // adapters of k and down share o and gate/up.
  std::unique_ptr<LoraAdapter> first =
      RandomAdapter(config, {4, 8.0, {LoraModule::kK, LoraModule::kDown}});
  std::unique_ptr<LoraAdapter> second =
      RandomAdapter(config, {4, 8.0, {LoraModule::kK, LoraModule::kDown}});
  for (LoraAdapter* a : {first.get(), second.get()}) {
    a->SetRequiresGrad(false);
    ASSERT_TRUE(decoder->MergeAdapter(*a).ok());
  }
  EXPECT_EQ(first->merged()[1].o.data_ptr(), second->merged()[1].o.data_ptr());
  EXPECT_EQ(first->merged()[1].gate_up.data_ptr(),
            second->merged()[1].gate_up.data_ptr());
  EXPECT_NE(first->merged()[1].qkv.data_ptr(),
            second->merged()[1].qkv.data_ptr());
  // An adapter being trained is refused: merged weights take no gradient.
  std::unique_ptr<LoraAdapter> trained = RandomAdapter(config);
  trained->SetRequiresGrad(true);
  EXPECT_EQ(decoder->MergeAdapter(*trained).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(trained->merged().empty());
  // An adapter of another layer count is refused.
  ModelConfig shorter = config;
  shorter.num_layers = config.num_layers - 1;
  std::unique_ptr<LoraAdapter> other = RandomAdapter(shorter);
  const absl::Status refused = decoder->MergeAdapter(*other);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("layers"), std::string::npos);
}

TEST(LoraTest, RefusesBadAdapters) {
  const ModelConfig config = TinyConfig();
  const std::string good_config =
      R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8})";
  auto load = [&](const std::string& json, const NamedTensors& tensors) {
    absl::StatusOr<std::string> bytes = SerializeTensors(tensors);
    EXPECT_TRUE(bytes.ok());
    return LoraAdapter::FromPeft(
               json,
               *safetensors::SafetensorsFile::FromBytes(*bytes, "adapter"),
               config, at::kCPU)
        .status();
  };
  const std::string a = PeftTensorName(0, LoraModule::kQ, true);
  const std::string b = PeftTensorName(0, LoraModule::kQ, false);
  EXPECT_EQ(a,
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  const NamedTensors good = {{a, at::zeros({4, 32})}, {b, at::zeros({32, 4})}};
  EXPECT_TRUE(load(good_config, good).ok());
  EXPECT_THAT(std::string(load("{", good).message()),
              HasSubstr("not a JSON object"));
  EXPECT_EQ(load(R"({"r": 4, "use_dora": true})", good).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(load(good_config, {{a, at::zeros({4, 31})},
                                             {b, at::zeros({32, 4})}})
                              .message()),
              HasSubstr("do not fit a 32 -> 32 layer"));
  EXPECT_THAT(
      std::string(load(good_config, {{a, at::zeros({4, 32})}}).message()),
      HasSubstr("needs both lora_A and lora_B"));
  EXPECT_THAT(std::string(load(good_config, {{a, at::full({4, 32}, NAN)},
                                             {b, at::zeros({32, 4})}})
                              .message()),
              HasSubstr("non-finite"));
  // One bad value among finite ones, in either weight, in float32 or bfloat16.
  for (const float bad : {NAN, INFINITY, -INFINITY}) {
    for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      at::Tensor b_bad = at::randn({32, 4}).to(dtype);
      b_bad[7][2] = bad;
      EXPECT_THAT(
          std::string(load(good_config, {{a, at::randn({4, 32})}, {b, b_bad}})
                          .message()),
          HasSubstr("model.layers.0.self_attn.q_proj: non-finite values"))
          << bad;
    }
  }
  EXPECT_THAT(std::string(load(R"({"r": 2})", good).message()),
              HasSubstr("rank 4 but the config says 2"));
  EXPECT_EQ(load(good_config, {{"base_model.model.lm_head.lora_A.weight",
                                at::zeros({4, 32})}})
                .code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_THAT(
      std::string(load(good_config, {{PeftTensorName(5, LoraModule::kQ, true),
                                      at::zeros({4, 32})}})
                      .message()),
      HasSubstr("the model has 2 layers"));
}

}  // namespace
}  // namespace microrl::model
