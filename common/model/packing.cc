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
  std::vector<int64_t> order(count);
  for (int64_t s = 0; s < count; ++s) order[s] = s;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return segments[a].length > segments[b].length;
  });
  std::vector<std::vector<int64_t>> members;
  for (int64_t s : order) {
    if (members.empty() ||
        2 * segments[s].length <= segments[members.back().front()].length) {
      members.emplace_back();
    }
    members.back().push_back(s);
  }
  std::vector<int64_t> positions(tokens);
  std::vector<int64_t> output_index(tokens);
  std::vector<int64_t> query_index;
  std::vector<int64_t> key_index;
  PackedLayout layout;
  layout.tokens = tokens;
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(device);
  for (const std::vector<int64_t>& bucket : members) {
    const int64_t size = static_cast<int64_t>(bucket.size());
    const int64_t query_length = segments[bucket.front()].length;
    int64_t key_length = 0;
    for (int64_t s : bucket) {
      key_length =
          std::max(key_length, segments[s].prefix_length + segments[s].length);
    }
    // Padding reads token 0: a padding query's output is dropped and a
    // padding key is masked out, so neither contributes to any value or
    // gradient.
    const size_t queries = query_index.size();
    const size_t keys = key_index.size();
    query_index.resize(queries + size * query_length, 0);
    key_index.resize(keys + size * key_length, 0);
    std::vector<int64_t> lengths(size);
    std::vector<int64_t> prefixes(size);
    for (int64_t b = 0; b < size; ++b) {
      const PackedSegment& g = segments[bucket[b]];
      lengths[b] = g.length;
      prefixes[b] = g.prefix_length;
      for (int64_t i = 0; i < g.length; ++i) {
        positions[g.begin + i] = g.prefix_length + i;
        query_index[queries + b * query_length + i] = g.begin + i;
        output_index[g.begin + i] = queries + b * query_length + i;
        key_index[keys + b * key_length + g.prefix_length + i] = g.begin + i;
      }
      for (int64_t j = 0; j < g.prefix_length; ++j) {
        key_index[keys + b * key_length + j] = g.prefix_begin + j;
      }
    }
    // Query i of a segment reads keys 0..prefix + i; a padding query reads
    // key 0 alone (its output is dropped; a row with no key would be NaN).
    const at::Tensor i =
        at::arange(query_length, long_options).view({1, -1, 1});
    const at::Tensor j = at::arange(key_length, long_options).view({1, 1, -1});
    const at::Tensor length =
        HostToDevice(lengths, at::kLong, device).view({-1, 1, 1});
    const at::Tensor prefix =
        HostToDevice(prefixes, at::kLong, device).view({-1, 1, 1});
    const at::Tensor real = i < length;
    layout.allowed.push_back(
        (real.logical_and(j <= prefix + i))
            .logical_or_(real.logical_not().logical_and(j == 0))
            .unsqueeze(1));
  }
  layout.positions = HostToDevice(positions, at::kLong, device).view({1, -1});
  layout.query_index = HostToDevice(query_index, at::kLong, device);
  layout.key_index = HostToDevice(key_index, at::kLong, device);
  layout.output_index = HostToDevice(output_index, at::kLong, device);
  return layout;
}

at::Tensor PackedAttention(const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const PackedLayout& layout) {
  const int64_t heads = q.size(2);
  const int64_t kv_heads = k.size(2);
  const int64_t head_dim = q.size(3);
  // One gather for all buckets' queries, keys and values (one gradient
  // scatter each in backward), split per bucket.
  std::vector<int64_t> query_rows;
  std::vector<int64_t> key_rows;
  for (const at::Tensor& allowed : layout.allowed) {
    query_rows.push_back(allowed.size(0) * allowed.size(2));
    key_rows.push_back(allowed.size(0) * allowed.size(3));
  }
  const std::vector<at::Tensor> queries = at::split_with_sizes(
      q[0].index_select(0, layout.query_index), query_rows);
  const std::vector<at::Tensor> keys =
      at::split_with_sizes(k[0].index_select(0, layout.key_index), key_rows);
  const std::vector<at::Tensor> values =
      at::split_with_sizes(v[0].index_select(0, layout.key_index), key_rows);
  // Grouped KV heads: SDPA takes them as they are on the CPU (measured faster
  // than repeating them); on CUDA its memory-efficient kernel, the one that
  // takes a mask, does not, so the (already gathered) heads are repeated.
  const bool repeat = q.is_cuda() && heads != kv_heads;
  std::vector<at::Tensor> outputs;
  for (size_t b = 0; b < layout.allowed.size(); ++b) {
    const at::Tensor& allowed = layout.allowed[b];
    const int64_t segments = allowed.size(0);
    const int64_t query_length = allowed.size(2);
    const int64_t key_length = allowed.size(3);
    auto heads_first = [&](const at::Tensor& x, int64_t length, int64_t n) {
      return x.view({segments, length, n, head_dim}).transpose(1, 2);
    };
    at::Tensor key = heads_first(keys[b], key_length, kv_heads);
    at::Tensor value = heads_first(values[b], key_length, kv_heads);
    if (repeat) {
      key = key.repeat_interleave(heads / kv_heads, 1);
      value = value.repeat_interleave(heads / kv_heads, 1);
    }
    const at::Tensor attended = at::scaled_dot_product_attention(
        heads_first(queries[b], query_length, heads), key, value, allowed,
        /*dropout_p=*/0.0, /*is_causal=*/false, /*scale=*/c10::nullopt,
        /*enable_gqa=*/!repeat && heads != kv_heads);  // [S, heads, Lq, D]
    outputs.push_back(attended.transpose(1, 2).reshape(
        {segments * query_length, heads, head_dim}));
  }
  const at::Tensor all =
      outputs.size() == 1 ? outputs.front() : at::cat(outputs, 0);
  return all.index_select(0, layout.output_index).unsqueeze(0);
}

}  // namespace microrl::model
