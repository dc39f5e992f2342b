#include "common/model/attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace microrl::model {

at::Tensor BmmFloat(const at::Tensor& a, const at::Tensor& b,
                    ScoreOutput output) {
  if (a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat) {
    return at::bmm(a, b);
  }
  if (a.is_cuda()) {
    return output == ScoreOutput::kFloat32 ? at::bmm(a, b, at::kFloat)
                                           : at::bmm(a, b).to(at::kFloat);
  }
  return at::bmm(a.to(at::kFloat), b.to(at::kFloat));
}

bool CudaBmmWritesFloat32(const at::Device& device, at::ScalarType dtype) {
  if (!device.is_cuda() || dtype == at::kFloat) return true;
  try {
    const at::Tensor x =
        at::ones({1, 2, 8}, at::TensorOptions().dtype(dtype).device(device));
    at::bmm(x, x.transpose(1, 2), at::kFloat);
    return true;
  } catch (const c10::OutOfMemoryError&) {
    throw;  // says nothing about the float32 output
  } catch (const c10::Error&) {
    return false;
  }
}

namespace {

// The sizes of queries [N, T, heads, D] against cached keys [N, kv_heads, L,
// D]; `group` query heads share each KV head.
struct Shapes {
  int64_t rows, steps, heads, head_dim, kv_heads, length, group;
};

Shapes ShapesOf(const at::Tensor& q, const at::Tensor& keys) {
  return {q.size(0),    q.size(1),    q.size(2),
          q.size(3),    keys.size(1), keys.size(2),
          q.size(2) / keys.size(1)};
}

}  // namespace

at::Tensor CachedAttention(const at::Tensor& q, const at::Tensor& keys,
                           const at::Tensor& values, const at::Tensor& mask,
                           ScoreOutput output) {
  const auto [rows, steps, heads, head_dim, kv_heads, length, group] =
      ShapesOf(q, keys);
  // [N * kv_heads, group * T, D]: query heads of a KV head as rows.
  const at::Tensor queries =
      q.view({rows, steps, kv_heads, group, head_dim})
          .permute({0, 2, 3, 1, 4})
          .reshape({rows * kv_heads, group * steps, head_dim});
  at::Tensor scores =
      BmmFloat(
          queries,
          keys.reshape({rows * kv_heads, length, head_dim}).transpose(1, 2),
          output)
          .view({rows, kv_heads, group, steps, length});
  scores.mul_(1.0 / std::sqrt(static_cast<double>(head_dim)));
  scores.masked_fill_(mask.view({rows, 1, 1, steps, length}),
                      -std::numeric_limits<float>::infinity());
  // Probabilities in the values' dtype times the values, accumulated in
  // float32 by the matmul (as flash attention does).
  const at::Tensor probabilities =
      at::softmax(scores, -1).to(values.scalar_type());
  return at::bmm(probabilities.view({rows * kv_heads, group * steps, length}),
                 values.reshape({rows * kv_heads, length, head_dim}))
      .view({rows, heads, steps, head_dim});
}

at::Tensor SharedPromptAttention(
    const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
    const at::Tensor& mask, const at::Tensor& prompt_keys,
    const at::Tensor& prompt_values, const at::Tensor& prompt_mask,
    const SharedPrompts& shared, ScoreOutput output) {
  const auto [rows, steps, heads, head_dim, kv_heads, length, group] =
      ShapesOf(q, keys);
  const int64_t slots = prompt_keys.size(0);
  const int64_t prompt_length = prompt_keys.size(2);
  const int64_t width = shared.rows.size(1);
  const at::ScalarType dtype = q.scalar_type();
  const at::Tensor queries = q.reshape({rows, kv_heads, group, head_dim});
  // Own keys: [N, kv_heads, group, L].
  const at::Tensor own =
      BmmFloat(
          queries.reshape({rows * kv_heads, group, head_dim}),
          keys.reshape({rows * kv_heads, length, head_dim}).transpose(1, 2),
          output)
          .view({rows, kv_heads, group, length})
          .masked_fill_(mask.view({rows, 1, 1, length}),
                        -std::numeric_limits<float>::infinity());
  // Prompt keys: the queries of each prompt slot's entries, [slots * kv_heads,
  // W * group, D], against its keys; then each row's entry, [N, kv_heads,
  // group, Lp].
  auto by_slot = [&](const at::Tensor& per_entry, int64_t last) {
    // [slots * W, kv_heads, group, last] -> [slots * kv_heads, W * group, last]
    return per_entry.view({slots, width, kv_heads, group, last})
        .permute({0, 2, 1, 3, 4})
        .reshape({slots * kv_heads, width * group, last});
  };
  auto by_entry = [&](const at::Tensor& per_slot, int64_t last) {
    // The inverse: [slots * kv_heads, W * group, last] -> [slots * W, ...]
    return per_slot.view({slots, kv_heads, width, group, last})
        .permute({0, 2, 1, 3, 4})
        .reshape({slots * width, kv_heads, group, last});
  };
  at::Tensor prompt_scores =
      BmmFloat(
          by_slot(queries.index_select(0, shared.rows.view({-1})), head_dim),
          prompt_keys.reshape({slots * kv_heads, prompt_length, head_dim})
              .transpose(1, 2),
          output)
          .view({slots, kv_heads, width, group, prompt_length})
          .masked_fill_(prompt_mask.view({slots, 1, width, 1, prompt_length}),
                        -std::numeric_limits<float>::infinity());
  const at::Tensor prompt_part =
      by_entry(
          prompt_scores.view({slots * kv_heads, width * group, prompt_length}),
          prompt_length)
          .index_select(0, shared.entry);
  const at::Tensor probabilities =
      at::softmax(at::cat({prompt_part, own}, -1)
                      .mul_(1.0 / std::sqrt(static_cast<double>(head_dim))),
                  -1)
          .to(dtype);
  const at::Tensor from_own =
      BmmFloat(probabilities.narrow(-1, prompt_length, length)
                   .reshape({rows * kv_heads, group, length}),
               values.reshape({rows * kv_heads, length, head_dim}), output);
  // Each row's prompt probabilities back to its entry (padding entries: zero;
  // rows sharing an entry read no prompt key, so all write zeros to it).
  const at::Tensor entry_probabilities =
      at::zeros({slots * width, kv_heads, group, prompt_length},
                probabilities.options())
          .index_copy_(0, shared.entry,
                       probabilities.narrow(-1, 0, prompt_length));
  const at::Tensor from_prompt =
      by_entry(BmmFloat(by_slot(entry_probabilities, prompt_length),
                        prompt_values.reshape(
                            {slots * kv_heads, prompt_length, head_dim}),
                        output),
               head_dim)
          .index_select(0, shared.entry);
  return (from_own.view({rows, kv_heads, group, head_dim}) + from_prompt)
      .to(dtype)
      .view({rows, heads, 1, head_dim});
}

}  // namespace microrl::model
