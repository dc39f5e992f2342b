#ifndef MICRORL_COMMON_MODEL_TOKEN_STATS_H_
#define MICRORL_COMMON_MODEL_TOKEN_STATS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace microrl::model {

struct TokenStats {
  at::Tensor logprobs;  // [M] float32: log softmax(logits / T)[target]
  at::Tensor entropy;   // [M] float32: entropy of softmax(logits / T)
};

// Per-token log-probabilities and entropies of the next-token distributions at
// `hidden` [M, H] (final hidden states of the positions predicting `targets`
// [M] int64) under logits = hidden lm_head^T / temperature, lm_head [V, H].
// Works through `chunk_rows` rows at a time, so at most [chunk_rows, V] float32
// logits exist at once, in forward and in backward (which recomputes them).
// Differentiable with respect to `hidden` (not lm_head).
//
// entropy_grad = false says the entropy is a figure the loss does not use.
// In float32 the forward then also keeps softmax(logits / T) lm_head ([M, H],
// one more product per chunk) and backward takes its gradient from that,
// without recomputing the logits: a third less work on the output layer. A
// gradient that reaches the entropy anyway is still exact (backward then
// recomputes).
absl::StatusOr<TokenStats> ComputeTokenStats(const at::Tensor& hidden,
                                             const at::Tensor& lm_head,
                                             const at::Tensor& targets,
                                             double temperature,
                                             int64_t chunk_rows,
                                             bool entropy_grad = true);

// A chunk size keeping one chunk's float32 logits within `budget_bytes`.
int64_t ChunkRowsForBudget(int64_t vocab_size,
                           int64_t budget_bytes = int64_t{128} << 20);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_TOKEN_STATS_H_
