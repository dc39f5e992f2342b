#include "common/model/packing.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/model/tensor_io.h"

namespace microrl::model {

absl::StatusOr<PackedLayout> MakePackedLayout(
    const std::vector<PackedSegment>& segments, int64_t tokens,
    const at::Device& device) {
  if (segments.empty() || tokens < 1) {
    return absl::InvalidArgumentError("a packed row needs tokens and segments");
  }
  std::vector<int64_t> owner(tokens, -1);  // segment of each token
  int64_t query_length = 0;
  int64_t key_length = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const PackedSegment& g = segments[s];
    if (g.length < 1 || g.begin < 0 || g.begin + g.length > tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "packed segment ", s, " [", g.begin, ", ", g.begin + g.length,
          ") is empty or outside the row of ", tokens));
    }
    for (int64_t t = g.begin; t < g.begin + g.length; ++t) {
      if (owner[t] >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "packed segments ", owner[t], " and ", s, " share token ", t));
      }
      owner[t] = static_cast<int64_t>(s);
    }
    query_length = std::max(query_length, g.length);
    key_length = std::max(key_length, g.prefix_length + g.length);
  }
  for (size_t s = 0; s < segments.size(); ++s) {
    const PackedSegment& g = segments[s];
    if (g.prefix_length == 0) continue;
    const bool is_segment =
        g.prefix_begin >= 0 && g.prefix_begin < tokens &&
        owner[g.prefix_begin] >= 0 &&
        segments[owner[g.prefix_begin]].begin == g.prefix_begin &&
        segments[owner[g.prefix_begin]].length == g.prefix_length &&
        segments[owner[g.prefix_begin]].prefix_length == 0;
    if (!is_segment) {
      return absl::InvalidArgumentError(
          absl::StrCat("the prefix of packed segment ", s,
                       " is not a segment without a prefix"));
    }
  }
  for (int64_t t = 0; t < tokens; ++t) {
    if (owner[t] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", t, " of the packed row is in no segment"));
    }
  }
  const int64_t count = static_cast<int64_t>(segments.size());
  std::vector<int64_t> positions(tokens);
  // Padding reads token 0: a padding query's output is dropped and a padding
  // key is masked out, so neither contributes to any value or gradient.
  std::vector<int64_t> query_index(count * query_length, 0);
  std::vector<int64_t> key_index(count * key_length, 0);
  std::vector<int64_t> output_index(tokens);
  std::vector<int64_t> lengths(count);
  std::vector<int64_t> prefixes(count);
  for (int64_t s = 0; s < count; ++s) {
    const PackedSegment& g = segments[s];
    lengths[s] = g.length;
    prefixes[s] = g.prefix_length;
    for (int64_t i = 0; i < g.length; ++i) {
      positions[g.begin + i] = g.prefix_length + i;
      query_index[s * query_length + i] = g.begin + i;
      output_index[g.begin + i] = s * query_length + i;
      key_index[s * key_length + g.prefix_length + i] = g.begin + i;
    }
    for (int64_t j = 0; j < g.prefix_length; ++j) {
      key_index[s * key_length + j] = g.prefix_begin + j;
    }
  }
  PackedLayout layout;
  layout.tokens = tokens;
  layout.positions = HostToDevice(positions, at::kLong, device).view({1, -1});
  layout.query_index = HostToDevice(query_index, at::kLong, device);
  layout.key_index = HostToDevice(key_index, at::kLong, device);
  layout.output_index = HostToDevice(output_index, at::kLong, device);
  // Query i of a segment reads keys 0..prefix + i; a padding query reads key
  // 0 alone (its output is dropped; a row with no key would be NaN).
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor i = at::arange(query_length, long_options).view({1, -1, 1});
  const at::Tensor j = at::arange(key_length, long_options).view({1, 1, -1});
  const at::Tensor length =
      HostToDevice(lengths, at::kLong, device).view({-1, 1, 1});
  const at::Tensor prefix =
      HostToDevice(prefixes, at::kLong, device).view({-1, 1, 1});
  const at::Tensor real = i < length;
  layout.allowed = (real.logical_and(j <= prefix + i))
                       .logical_or_(real.logical_not().logical_and(j == 0))
                       .unsqueeze(1);
  return layout;
}

at::Tensor PackedAttention(const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const PackedLayout& layout) {
  const int64_t heads = q.size(2);
  const int64_t kv_heads = k.size(2);
  const int64_t head_dim = q.size(3);
  const int64_t segments = layout.allowed.size(0);
  const int64_t query_length = layout.allowed.size(2);
  const int64_t key_length = layout.allowed.size(3);
  const at::Tensor queries =
      q[0].index_select(0, layout.query_index)
          .view({segments, query_length, heads, head_dim})
          .transpose(1, 2);
  auto gather_keys = [&](const at::Tensor& x) {
    return x[0]
        .index_select(0, layout.key_index)
        .view({segments, key_length, kv_heads, head_dim})
        .transpose(1, 2);
  };
  at::Tensor keys = gather_keys(k);
  at::Tensor values = gather_keys(v);
  // Grouped KV heads: SDPA takes them as they are on the CPU (measured faster
  // than repeating them); on CUDA its memory-efficient kernel, the one that
  // takes a mask, does not, so the (already gathered) heads are repeated.
  const bool repeat = q.is_cuda() && heads != kv_heads;
  if (repeat) {
    keys = keys.repeat_interleave(heads / kv_heads, 1);
    values = values.repeat_interleave(heads / kv_heads, 1);
  }
  const at::Tensor attended = at::scaled_dot_product_attention(
      queries, keys, values, layout.allowed,
      /*dropout_p=*/0.0, /*is_causal=*/false, /*scale=*/c10::nullopt,
      /*enable_gqa=*/!repeat && heads != kv_heads);  // [S, heads, Lq, D]
  return attended.transpose(1, 2)
      .reshape({segments * query_length, heads, head_dim})
      .index_select(0, layout.output_index)
      .unsqueeze(0);
}

}  // namespace microrl::model
