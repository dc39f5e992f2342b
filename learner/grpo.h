#ifndef MICRORL_LEARNER_GRPO_H_
#define MICRORL_LEARNER_GRPO_H_

// GRPO's pieces as pure tensor functions: group-relative advantages, the
// clipped policy loss (clip-higher, dual-clip), loss aggregation modes, KL
// estimators and the entropy bonus. They follow the formulas of verl
// (verl/trainer/ppo/core_algos.py) and TRL's GRPOTrainer; docs/learner.md says
// where the two differ and which one is followed.
#include <ATen/core/Tensor.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "learner/grpo_modes.h"

namespace microrl::learner {

struct AdvantageOptions {
  AdvantageNorm norm = AdvantageNorm::kGroupStd;
  double epsilon = 1e-6;
};

// rewards [N] float, N = groups x group_size, each group contiguous. Standard
// deviations are unbiased (n - 1), as torch.std; a group of one has mean 0 and
// std 1 (verl). Returns [N] float32.
at::Tensor ComputeAdvantages(const at::Tensor& rewards, int64_t group_size,
                             const AdvantageOptions& options);

// [N] bool: whether each completion's group has all rewards equal (its
// advantages are all zero; such groups can be filtered out of the batch).
at::Tensor ZeroVarianceGroups(const at::Tensor& rewards, int64_t group_size);

absl::StatusOr<LossAggregation> ParseLossAggregation(absl::string_view name);
const char* LossAggregationName(LossAggregation mode);

// The denominators of a whole mini-batch, so that the losses of its
// micro-batches add up to the mini-batch's loss: tokens (valid tokens),
// sequences (sequences with at least one valid token), horizon (the constant
// of kSeqMeanTokenSumNorm, e.g. the maximum response length).
struct LossNormalizer {
  double tokens = 0;
  double sequences = 0;
  double horizon = 1;
};

// The normalizer of one batch on its own.
LossNormalizer NormalizerOf(const at::Tensor& mask, double horizon);

// loss, mask: [B, T] (mask 1 for response tokens, 0 for padding).
at::Tensor AggregateLoss(const at::Tensor& loss, const at::Tensor& mask,
                         LossAggregation mode,
                         const LossNormalizer& normalizer);

absl::StatusOr<KlEstimator> ParseKlEstimator(absl::string_view name);
const char* KlEstimatorName(KlEstimator estimator);

// Per-token KL(policy || reference) estimates from log-probs of the sampled
// tokens: k1 = logp - ref, k2 = (logp - ref)^2 / 2, k3 = exp(ref - logp) -
// (ref - logp) - 1 (with verl's clamps: the log-ratio to [-20, 20], the
// estimate to [-10, 10]).
at::Tensor KlPenalty(const at::Tensor& logprob, const at::Tensor& ref_logprob,
                     KlEstimator estimator);

struct PolicyLossOptions {
  double clip_low = 0.2;  // ratio floor 1 - clip_low
  double clip_high =
      0.2;  // ratio ceiling 1 + clip_high (clip-higher: > clip_low)
  // Dual-clip bound c (> 1) for negative advantages; <= 1 turns it off.
  double dual_clip = 3.0;
  LossAggregation aggregation = LossAggregation::kTokenMean;
};

struct PolicyLossResult {
  at::Tensor loss;  // scalar
  // Fractions of valid tokens (scalars, no gradient): clipped at the ceiling
  // (positive advantage), at the floor (negative advantage), by dual-clip.
  at::Tensor clip_high_fraction;
  at::Tensor clip_low_fraction;
  at::Tensor dual_clip_fraction;
  // mean of old_logprob - logprob over valid tokens (verl's ppo_kl).
  at::Tensor approx_kl;
};

// PPO-clip policy loss of GRPO. logprob [B, T] (differentiable), old_logprob
// [B, T], advantages [B] or [B, T], mask [B, T]. `token_weights` [B, T], if
// defined, multiplies each token's loss (OffPolicyCorrection's weights); the
// denominators stay the normalizer's.
PolicyLossResult PolicyLoss(const at::Tensor& logprob,
                            const at::Tensor& old_logprob,
                            const at::Tensor& advantages,
                            const at::Tensor& mask,
                            const PolicyLossOptions& options,
                            const LossNormalizer& normalizer,
                            const at::Tensor& token_weights = {});

// Correction of the policy loss for tokens sampled by another policy than the
// one the update starts from (a rollout adapter some steps old, or a rollout
// engine whose numerics differ): the importance ratio of a token is
// exp(old_logprob - rollout_logprob).
struct OffPolicyOptions {
  // > 0: truncated importance sampling, each token's loss times
  // min(ratio, tis_cap) (verl's tis_imp_ratio_cap). 0: off.
  double tis_cap = 0;
  // Tokens (or sequences) whose ratio is outside [mask_low, mask_high] get
  // weight 0.
  IsMask mask = IsMask::kNone;
  double mask_low = 0.5;
  double mask_high = 2.0;
  bool active() const { return tis_cap > 0 || mask != IsMask::kNone; }
};
struct OffPolicyWeights {
  at::Tensor weights;    // [B, T], no gradient
  at::Tensor truncated;  // [B, T] 1 where the TIS weight was capped
  at::Tensor masked;     // [B, T] 1 where the token was masked out
};
// old_logprob, rollout_logprob, mask: [B, T].
OffPolicyWeights OffPolicyCorrection(const at::Tensor& old_logprob,
                                     const at::Tensor& rollout_logprob,
                                     const at::Tensor& mask,
                                     const OffPolicyOptions& options);

struct GrpoLossOptions {
  PolicyLossOptions policy;
  double kl_coef = 0;  // 0: no KL term (no reference log-probs needed)
  KlEstimator kl_estimator = KlEstimator::kK3;
  double entropy_coef = 0;
};

struct GrpoLossResult {
  at::Tensor loss;  // policy + kl_coef * kl - entropy_coef * entropy
  PolicyLossResult policy;
  at::Tensor kl;       // aggregated KL estimate (undefined when kl_coef == 0)
  at::Tensor entropy;  // aggregated entropy (undefined when not given)
};

// The whole objective. ref_logprob may be undefined when kl_coef is 0, and
// entropy [B, T] undefined when entropy_coef is 0 and it is not wanted.
// `token_weights` weigh the policy term (see PolicyLoss).
GrpoLossResult GrpoLoss(const at::Tensor& logprob,
                        const at::Tensor& old_logprob,
                        const at::Tensor& ref_logprob,
                        const at::Tensor& entropy, const at::Tensor& advantages,
                        const at::Tensor& mask, const GrpoLossOptions& options,
                        const LossNormalizer& normalizer,
                        const at::Tensor& token_weights = {});

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_GRPO_H_
