#include "common/model/token_stats.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"

namespace microrl::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Float32 logits / temperature of rows [start, start + rows).
at::Tensor ScaledLogits(const at::Tensor& hidden, const at::Tensor& lm_head,
                        int64_t start, int64_t rows, double temperature) {
  at::Tensor logits =
      at::linear(hidden.narrow(0, start, rows), lm_head).to(at::kFloat);
  return temperature == 1.0 ? logits : logits / temperature;
}

struct ChunkedTokenStats : public torch::autograd::Function<ChunkedTokenStats> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden,
                               const at::Tensor& lm_head,
                               const at::Tensor& targets, double temperature,
                               int64_t chunk_rows, bool entropy_grad) {
    const int64_t total = hidden.size(0);
    at::Tensor logprobs =
        at::empty({total}, hidden.options().dtype(at::kFloat));
    at::Tensor entropy = at::empty({total}, hidden.options().dtype(at::kFloat));
    // Without an entropy gradient, d logp[t] / d hidden = (lm_head[t] - p
    // lm_head) / T needs only the expected output embedding p lm_head [M, H],
    // one more product here: backward then neither recomputes the logits nor
    // passes over them. Float32 only: in half precision that difference of
    // near-equal rows would lose the gradient.
    const bool expected_rows = !entropy_grad && hidden.requires_grad() &&
                               hidden.scalar_type() == at::kFloat &&
                               lm_head.scalar_type() == at::kFloat;
    at::Tensor expected;
    if (expected_rows) expected = at::empty_like(hidden);
    for (int64_t start = 0; start < total; start += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, total - start);
      const at::Tensor log_p = at::log_softmax(
          ScaledLogits(hidden, lm_head, start, rows, temperature), -1);
      logprobs.narrow(0, start, rows)
          .copy_(log_p.gather(1, targets.narrow(0, start, rows).unsqueeze(1))
                     .squeeze(1));
      const at::Tensor p = log_p.exp();
      entropy.narrow(0, start, rows).copy_(-(p * log_p).sum(-1));
      if (expected_rows) {
        at::Tensor out = expected.narrow(0, start, rows);
        at::mm_out(out, p, lm_head);
      }
    }
    // Undefined, not zero, gradients for outputs the loss does not use.
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({hidden, lm_head, targets, expected});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk_rows"] = chunk_rows;
    return {logprobs, entropy};
  }

  // d logp[t] / dz = onehot(t) - p;  d H / dz = -p (log p + H);  z = logits /
  // T.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& hidden = saved[0];
    const at::Tensor& lm_head = saved[1];
    const at::Tensor& targets = saved[2];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const at::Tensor& expected = saved[3];
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const int64_t total = hidden.size(0);
    if (!grads[0].defined() && !grads[1].defined()) {
      return {at::Tensor(), at::Tensor(), at::Tensor(),
              at::Tensor(), at::Tensor(), at::Tensor()};
    }
    if (expected.defined() && !grads[1].defined()) {
      // (lm_head[t] - p lm_head) * d loss / d logp[t] / T, row by row.
      return {(lm_head.index_select(0, targets) - expected) *
                  (grads[0] / temperature).unsqueeze(1),
              at::Tensor(),
              at::Tensor(),
              at::Tensor(),
              at::Tensor(),
              at::Tensor()};
    }
    const at::Tensor grad_logprobs =
        grads[0].defined()
            ? grads[0]
            : at::zeros({total}, hidden.options().dtype(at::kFloat));
    at::Tensor grad_hidden = at::empty_like(hidden);
    for (int64_t start = 0; start < total; start += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, total - start);
      const at::Tensor log_p = at::log_softmax(
          ScaledLogits(hidden, lm_head, start, rows, temperature), -1);
      const at::Tensor p = log_p.exp();
      const at::Tensor g_lp =
          grad_logprobs.narrow(0, start, rows).unsqueeze(1);  // [c, 1]
      at::Tensor grad_z = -p * g_lp;
      if (grads[1].defined()) {
        const at::Tensor g_h = grads[1].narrow(0, start, rows).unsqueeze(1);
        const at::Tensor h = -(p * log_p).sum(-1, /*keepdim=*/true);
        grad_z -= g_h * p * (log_p + h);
      }
      grad_z.scatter_add_(1, targets.narrow(0, start, rows).unsqueeze(1), g_lp);
      if (temperature != 1.0) grad_z = grad_z / temperature;
      grad_hidden.narrow(0, start, rows)
          .copy_(at::matmul(grad_z.to(lm_head.scalar_type()), lm_head));
    }
    return {grad_hidden,  at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

int64_t ChunkRowsForBudget(int64_t vocab_size, int64_t budget_bytes) {
  return std::max<int64_t>(
      1, budget_bytes / (std::max<int64_t>(vocab_size, 1) * 4));
}

absl::StatusOr<TokenStats> ComputeTokenStats(const at::Tensor& hidden,
                                             const at::Tensor& lm_head,
                                             const at::Tensor& targets,
                                             double temperature,
                                             int64_t chunk_rows,
                                             bool entropy_grad) {
  if (hidden.dim() != 2 || lm_head.dim() != 2 ||
      hidden.size(1) != lm_head.size(1)) {
    return absl::InvalidArgumentError(
        "ComputeTokenStats: want hidden [M, H], lm_head [V, H]");
  }
  if (targets.dim() != 1 || targets.size(0) != hidden.size(0) ||
      targets.scalar_type() != at::kLong) {
    return absl::InvalidArgumentError(
        "ComputeTokenStats: want int64 targets [M]");
  }
  if (!(temperature > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ComputeTokenStats: temperature must be positive, got ", temperature));
  }
  if (chunk_rows <= 0)
    return absl::InvalidArgumentError("ComputeTokenStats: chunk_rows <= 0");
  try {
    const at::Tensor on_device = targets.to(hidden.device());
    if (hidden.size(0) > 0) {
      const auto [low, high] = at::aminmax(on_device);
      if (low.item<int64_t>() < 0 || high.item<int64_t>() >= lm_head.size(0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("ComputeTokenStats: target ids must be in [0, ",
                         lm_head.size(0), ")"));
      }
    }
    const variable_list out = ChunkedTokenStats::apply(
        hidden, lm_head, on_device, temperature, chunk_rows, entropy_grad);
    return TokenStats{out[0], out[1]};
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("ComputeTokenStats: ", e.what()));
  }
}

}  // namespace microrl::model
