#ifndef MICRORL_LEARNER_POLICY_UPDATE_H_
#define MICRORL_LEARNER_POLICY_UPDATE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/model/decoder.h"
#include "common/model/lora.h"
#include "learner/grpo.h"
#include "learner/optimizer.h"

namespace microrl::distributed {
class Communicator;
}  // namespace microrl::distributed

namespace microrl::learner {

// One completion as the update sees it.
struct Sample {
  std::vector<int32_t> prompt;      // prompt token ids
  std::vector<int32_t> completion;  // sampled token ids (>= 1)
  std::vector<float>
      rollout_logprobs;  // per completion token, from the rollout
  float advantage = 0;
};

struct UpdateOptions {
  GrpoLossOptions loss;
  int64_t mini_batches = 1;  // optimizer steps per epoch
  int64_t epochs = 1;
  // Old log-probs: recomputed with the adapter before the first step (true), or
  // the rollout's (false).
  bool recompute_old_logprobs = false;
  // Tokens per forward/backward: the packed row's (prompts shared), or, with
  // packing off, the padded batch's (count x longest).
  int64_t micro_batch_tokens = 8192;
  // Micro-batches as packed rows (common/model/packing.h): the samples end to
  // end, taken by prompt (in order of first appearance) and longest first
  // within each, filled up to micro_batch_tokens, with no compute on padding
  // in the linear layers. Off: padded [B, T] batches of consecutive samples.
  bool packing = true;
  // With packing: the samples of a micro-batch with the same prompt read one
  // copy of it, run once with gradient (its activations get the gradients of
  // all of them). The result equals the unshared computation.
  bool share_prompts = true;
  double temperature = 1.0;  // log-probs of logits / temperature
  bool gradient_checkpointing = true;
  double horizon = 1;  // seq-mean-token-sum-norm's constant
  double max_grad_norm = 1.0;
  // Importance weights and masks of the rollout's samples against the old
  // log-probs (meaningful with recompute_old_logprobs).
  OffPolicyOptions off_policy;
  ScheduleOptions schedule;
};

// Data parallelism: the samples given to Update are one rank's contiguous
// share [first_sample, first_sample + size) of a batch of global_samples
// spread over the communicator's ranks. Mini-batches are cut from the global
// batch (a rank trains its part of each), the loss denominators and the
// gradients are summed over the ranks before each optimizer step, and the
// statistics are global: every rank takes the optimizer steps one process
// with the whole batch would take.
struct DataParallel {
  distributed::Communicator* communicator = nullptr;
  int64_t global_samples = 0;
  int64_t first_sample = 0;
};

// What an update measured (means over its optimizer steps; fractions over
// tokens).
struct UpdateStats {
  int64_t optimizer_steps = 0;
  int64_t skipped_steps = 0;  // steps left out for a non-finite gradient norm
  int64_t micro_batches = 0;
  int64_t tokens = 0;  // completion tokens in the batch
  double loss = 0;
  double policy_loss = 0;
  double kl = 0;       // KL estimate to the reference (0 without kl_coef)
  double entropy = 0;  // mean token entropy under the policy at `temperature`
  double clip_high_fraction = 0;
  double clip_low_fraction = 0;
  double dual_clip_fraction = 0;
  double approx_kl = 0;
  double grad_norm = 0;  // before clipping
  double lr = 0;         // of the last step
  // |learner log-prob - rollout log-prob| over the batch's tokens before any
  // step: mean and max (rollout/training mismatch).
  double logprob_mismatch_mean = 0;
  double logprob_mismatch_max = 0;
  // With off_policy active, over the batch's tokens: the mean importance
  // weight applied, and the fractions whose TIS weight was capped and that
  // were masked out.
  double is_weight_mean = 0;
  double is_truncated_fraction = 0;
  double is_masked_fraction = 0;
};

// Applies GRPO updates to the LoRA adapter's weights (only those: the base
// weights are frozen plain tensors) from a batch of samples: for each epoch,
// the batch is cut into mini_batches, each one optimizer step; each mini-batch
// is run in micro-batches of at most micro_batch_tokens tokens (packed, or
// padded with packing off) with gradient accumulation, its loss normalized
// over the whole mini-batch.
class PolicyUpdater {
 public:
  PolicyUpdater(const model::Decoder& decoder, model::LoraAdapter& adapter,
                AdamW& optimizer, const UpdateOptions& options);

  // `step` counts optimizer steps so far (for the schedule) and advances.
  // `stopping`, if set, is asked before each micro-batch until the first
  // optimizer step: true ends the update there with CANCELLED, the weights,
  // the optimizer state and `step` untouched and the gradients zeroed. Once a
  // step has been taken the update runs to its end.
  //
  // With `data_parallel`, every rank must call Update for each step (with an
  // empty share if it has none), and `stopping` must answer the same on all
  // ranks (or be unset).
  absl::StatusOr<UpdateStats> Update(
      const std::vector<Sample>& samples, int64_t& step,
      const std::function<bool()>& stopping = {},
      const DataParallel* data_parallel = nullptr);

  // Per-token log-probs and entropies of `samples`' completions under the
  // adapter (or the base model with adapter == nullptr), no gradient, as
  // [B, T] padded tensors with mask; for the rollout-mismatch metric and tests.
  struct TokenTensors {
    at::Tensor logprobs;  // [B, T]
    at::Tensor entropy;   // [B, T]
    at::Tensor mask;      // [B, T] float
  };
  absl::StatusOr<TokenTensors> Score(absl::Span<const Sample> samples,
                                     const model::LoraAdapter* adapter,
                                     bool with_grad) const;

  // The micro-batches (indices into `samples`) of samples [begin, end), as
  // Update runs them.
  std::vector<std::vector<size_t>> MicroBatches(
      const std::vector<Sample>& samples, size_t begin, size_t end) const;

 private:
  absl::StatusOr<TokenTensors> ScoreSamples(
      const std::vector<const Sample*>& samples,
      const model::LoraAdapter* adapter, bool with_grad) const;
  // Hidden states predicting each completion token: the rows of a padded
  // [B, T] batch or of a packed row, as `rows` indexes a flat [rows, hidden]
  // view of the forward's output.
  struct Prediction {
    at::Tensor hidden;  // the forward's output, [M, hidden]
    std::vector<int64_t> rows, targets, row_b, row_t;
  };
  absl::StatusOr<Prediction> ForwardPadded(
      const std::vector<const Sample*>& samples,
      const model::RunOptions& run) const;
  absl::StatusOr<Prediction> ForwardPacked(
      const std::vector<const Sample*>& samples,
      const model::RunOptions& run) const;

  const model::Decoder& decoder_;
  model::LoraAdapter& adapter_;
  AdamW& optimizer_;
  const UpdateOptions options_;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_POLICY_UPDATE_H_
