// The decoder's attention kernels against at::scaled_dot_product_attention on
// random tensors, and RoPE against its formulas.
#include "common/model/attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "common/model/config.h"
#include "common/model/rope.h"
#include "gtest/gtest.h"

namespace microrl::model {
namespace {

// SDPA of one row's queries [heads, T, D] over keys/values [kv_heads, L, D]
// with `attend` [T, L] (true: attended), the KV heads repeated for their
// query heads.
at::Tensor Reference(const at::Tensor& q, const at::Tensor& keys,
                     const at::Tensor& values, const at::Tensor& attend) {
  const int64_t group = q.size(0) / keys.size(0);
  return at::scaled_dot_product_attention(
      q.unsqueeze(0), keys.repeat_interleave(group, 0).unsqueeze(0),
      values.repeat_interleave(group, 0).unsqueeze(0),
      attend.unsqueeze(0).unsqueeze(0))[0];
}

TEST(AttentionTest, CachedAttentionEqualsSdpaWithGroupedHeads) {
  at::manual_seed(3);
  const int64_t rows = 3, steps = 2, heads = 4, kv_heads = 2, dim = 8, len = 9;
  const at::Tensor q = at::randn({rows, steps, heads, dim});
  const at::Tensor keys = at::randn({rows, kv_heads, len, dim});
  const at::Tensor values = at::randn({rows, kv_heads, len, dim});
  // Random masks, each query keeping its first key at least.
  at::Tensor mask = at::rand({rows, 1, steps, len}) < 0.4;
  mask.select(3, 0).fill_(false);
  for (ScoreOutput output : {ScoreOutput::kFloat32, ScoreOutput::kInputDtype}) {
    const at::Tensor ours = CachedAttention(q, keys, values, mask, output);
    ASSERT_EQ(ours.sizes(), at::IntArrayRef({rows, heads, steps, dim}));
    for (int64_t n = 0; n < rows; ++n) {
      const at::Tensor expected = Reference(
          q[n].transpose(0, 1), keys[n], values[n], mask[n][0].logical_not());
      EXPECT_TRUE(at::allclose(ours[n], expected, 1e-5, 1e-5))
          << (ours[n] - expected).abs().max();
    }
  }
}

TEST(AttentionTest, SharedPromptAttentionEqualsSdpaOverPromptThenOwnKeys) {
  at::manual_seed(4);
  const int64_t rows = 3, heads = 4, kv_heads = 2, dim = 8, len = 5;
  const int64_t prompt_len = 6;
  const at::Tensor q = at::randn({rows, 1, heads, dim});
  const at::Tensor keys = at::randn({rows, kv_heads, len, dim});
  const at::Tensor values = at::randn({rows, kv_heads, len, dim});
  at::Tensor mask = at::rand({rows, 1, 1, len}) < 0.3;
  mask.select(3, 0).fill_(false);
  const at::Tensor prompt_keys = at::randn({2, kv_heads, prompt_len, dim});
  const at::Tensor prompt_values = at::randn({2, kv_heads, prompt_len, dim});
  // Row 0 reads prompt slot 0 at [2, 6), row 1 prompt slot 1 at [1, 5), row
  // 2 holds its prompt itself (the extra entry 1, which reads nothing).
  SharedPrompts shared;
  shared.rows = at::tensor({0, 0, 1, 0}, at::kLong).view({2, 2});
  shared.entry = at::tensor({0, 2, 1}, at::kLong);
  shared.starts = at::tensor({2, 0, 1, 0}, at::kLong).view({2, 2});
  shared.ends = at::tensor({6, 0, 5, 0}, at::kLong).view({2, 2});
  shared.key_length = prompt_len;
  const at::Tensor positions = at::arange(prompt_len, at::kLong);
  const at::Tensor prompt_mask =
      (positions < shared.starts.unsqueeze(-1))
          .logical_or(positions >= shared.ends.unsqueeze(-1));
  const at::Tensor ours =
      SharedPromptAttention(q, keys, values, mask, prompt_keys, prompt_values,
                            prompt_mask, shared, ScoreOutput::kFloat32);
  ASSERT_EQ(ours.sizes(), at::IntArrayRef({rows, heads, 1, dim}));
  const std::vector<std::vector<int64_t>> reads = {{0, 2, 6}, {1, 1, 5}, {}};
  for (int64_t n = 0; n < rows; ++n) {
    at::Tensor k = keys[n];
    at::Tensor v = values[n];
    at::Tensor attend = mask[n][0].logical_not();  // [1, len]
    if (!reads[n].empty()) {
      const int64_t slot = reads[n][0], from = reads[n][1], to = reads[n][2];
      k = at::cat({prompt_keys[slot].narrow(1, from, to - from), k}, 1);
      v = at::cat({prompt_values[slot].narrow(1, from, to - from), v}, 1);
      attend = at::cat({at::ones({1, to - from}, at::kBool), attend}, 1);
    }
    const at::Tensor expected = Reference(q[n].transpose(0, 1), k, v, attend);
    EXPECT_TRUE(at::allclose(ours[n], expected, 1e-5, 1e-5))
        << "row " << n << ": " << (ours[n] - expected).abs().max();
  }
}

TEST(RopeTest, InverseFrequenciesWithoutScaling) {
  ModelConfig config;
  config.head_dim = 8;
  config.rope.theta = 10000;
  const at::Tensor inv_freq = RopeInverseFrequencies(config);
  ASSERT_EQ(inv_freq.numel(), 4);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(inv_freq[i].item<double>(), std::pow(10000.0, -2.0 * i / 8),
                1e-7);
  }
}

TEST(RopeTest, Llama3ScalingKeepsHighLowersLowAndSmoothsBetween) {
  // Llama 3.1's rope_scaling: factor 8, low 1, high 4, 8192 original tokens.
  ModelConfig config;
  config.head_dim = 128;
  config.rope.theta = 500000;
  config.rope.llama3_scaling = true;
  config.rope.factor = 8;
  config.rope.low_freq_factor = 1;
  config.rope.high_freq_factor = 4;
  config.rope.original_max_position_embeddings = 8192;
  const at::Tensor scaled = RopeInverseFrequencies(config);
  ModelConfig plain = config;
  plain.rope.llama3_scaling = false;
  const at::Tensor base = RopeInverseFrequencies(plain);
  int regimes[3] = {0, 0, 0};
  for (int64_t i = 0; i < base.numel(); ++i) {
    const double f = base[i].item<double>();
    const double wavelen = 2 * M_PI / f;
    double expected;
    if (wavelen < 8192.0 / 4) {
      expected = f;  // high frequencies: unchanged
      ++regimes[0];
    } else if (wavelen > 8192.0 / 1) {
      expected = f / 8;  // low frequencies: divided by the factor
      ++regimes[1];
    } else {
      const double smooth = (8192.0 / wavelen - 1) / (4 - 1);
      expected = (1 - smooth) * f / 8 + smooth * f;
      ++regimes[2];
    }
    EXPECT_NEAR(scaled[i].item<double>(), expected, 1e-6 * f) << i;
  }
  EXPECT_GT(regimes[0], 0);
  EXPECT_GT(regimes[1], 0);
  EXPECT_GT(regimes[2], 0);
}

TEST(RopeTest, ApplyRotaryIsTheRotateHalfFormula) {
  at::manual_seed(5);
  ModelConfig config;
  config.head_dim = 8;
  config.rope.theta = 10000;
  const at::Tensor positions = at::tensor({0, 3, 17}, at::kLong).view({1, 3});
  const auto [cos, sin] =
      RotaryTables(positions, RopeInverseFrequencies(config), at::kFloat);
  const at::Tensor x = at::randn({1, 3, 2, 8});
  // transformers: x * cos + rotate_half(x) * sin, rotate_half(x) =
  // cat(-x2, x1), with cos/sin of the frequencies repeated over the halves.
  const at::Tensor freqs =
      positions.to(at::kFloat).unsqueeze(-1) * RopeInverseFrequencies(config);
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  const at::Tensor rotated =
      at::cat({-x.narrow(-1, 4, 4), x.narrow(-1, 0, 4)}, -1);
  const at::Tensor expected =
      x * emb.cos().unsqueeze(2) + rotated * emb.sin().unsqueeze(2);
  EXPECT_TRUE(at::allclose(ApplyRotary(x, cos, sin), expected, 1e-6, 1e-6));
}

}  // namespace
}  // namespace microrl::model
