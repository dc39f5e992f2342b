#ifndef MICRORL_COMMON_MODEL_PACKING_H_
#define MICRORL_COMMON_MODEL_PACKING_H_

// Packed batches for scoring and training: sequences laid end to end in one
// row of tokens, with no padding through the model's linear layers, each
// attending only to what it would see on its own. A sequence may read a
// prefix held elsewhere in the row first (a shared prompt: the G completions
// of a group attend to one copy of the prompt's keys and values, whose
// activations then receive the gradients of all G).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace microrl::model {

// One sequence of a packed row: its own tokens are [begin, begin + length);
// it first attends to the row's tokens [prefix_begin, prefix_begin +
// prefix_length) (none when prefix_length is 0), then causally to its own.
// Its RoPE positions start at prefix_length. A prefix is itself a segment
// (with no prefix) of the same row.
struct PackedSegment {
  int64_t begin = 0;
  int64_t length = 0;
  int64_t prefix_begin = 0;
  int64_t prefix_length = 0;
};

// The index tensors a packed forward uses (on the decoder's device). Attention
// runs on the segments as padded batches (buckets, below): each bucket's
// queries and keys gathered from the row (padding reads token 0, masked out or
// dropped).
struct PackedLayout {
  int64_t tokens = 0;    // N: the row's length
  at::Tensor positions;  // [1, N] int64 RoPE positions
  // Segments attend in buckets by own length, longest first, a new bucket
  // where the length is half the bucket's longest or less: padding costs at
  // most about twice the real attention however lengths spread (one padded
  // batch would pad every sequence to the longest). Bucket b holds S_b
  // segments of up to Lq_b queries and Lk_b keys: allowed[b] is
  // [S_b, 1, Lq_b, Lk_b] bool, true where a query reads a key.
  std::vector<at::Tensor> allowed;
  at::Tensor query_index;   // [sum of S_b * Lq_b] int64 in [0, N)
  at::Tensor key_index;     // [sum of S_b * Lk_b] int64 in [0, N)
  at::Tensor output_index;  // [N] int64: each token's place in query_index
};

// Checks that the segments tile [0, tokens) exactly (each token in one
// segment) and that every prefix is a segment without a prefix.
absl::StatusOr<PackedLayout> MakePackedLayout(
    const std::vector<PackedSegment>& segments, int64_t tokens,
    const at::Device& device);

// Attention of a packed row: q [1, N, heads, D], k and v [1, N, kv_heads, D]
// (RoPE applied). Returns [1, N, heads, D] in q's dtype. Differentiable.
at::Tensor PackedAttention(const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const PackedLayout& layout);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_PACKING_H_
