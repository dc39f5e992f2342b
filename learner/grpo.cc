#include "learner/grpo.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace microrl::learner {
namespace {

at::Tensor MaskedMean(const at::Tensor& values, const at::Tensor& mask) {
  return (values * mask).sum() / mask.sum().clamp_min(1);
}

}  // namespace

at::Tensor ComputeAdvantages(const at::Tensor& rewards, int64_t group_size,
                             const AdvantageOptions& options) {
  const at::Tensor r = rewards.to(at::kFloat).reshape({-1, group_size});
  at::Tensor mean;
  at::Tensor std;
  if (group_size == 1) {
    mean = at::zeros_like(r);
    std = at::ones_like(r);
  } else {
    mean = r.mean(1, /*keepdim=*/true);
    std = r.std(1, /*unbiased=*/true, /*keepdim=*/true);
  }
  const at::Tensor centered = r - mean;
  switch (options.norm) {
    case AdvantageNorm::kGroupStd:
      return (centered / (std + options.epsilon)).reshape({-1});
    case AdvantageNorm::kNone:
      return centered.reshape({-1});
    case AdvantageNorm::kBatchStd: {
      const at::Tensor batch_std =
          r.numel() > 1 ? r.std() : at::ones({}, r.options());
      return (centered / (batch_std + options.epsilon)).reshape({-1});
    }
  }
  return centered.reshape({-1});
}

at::Tensor ZeroVarianceGroups(const at::Tensor& rewards, int64_t group_size) {
  const at::Tensor r = rewards.reshape({-1, group_size});
  const at::Tensor same =
      (r == r.select(1, 0).unsqueeze(1)).all(1, /*keepdim=*/true);
  return same.expand_as(r).reshape({-1});
}

absl::StatusOr<LossAggregation> ParseLossAggregation(absl::string_view name) {
  return ParseEnumName("loss aggregation", name, kLossAggregationNames);
}

const char* LossAggregationName(LossAggregation mode) {
  return NameOf(mode, kLossAggregationNames, "unknown");
}

LossNormalizer NormalizerOf(const at::Tensor& mask, double horizon) {
  LossNormalizer normalizer;
  normalizer.tokens = mask.sum().item<double>();
  normalizer.sequences = (mask.sum(-1) > 0).sum().item<double>();
  normalizer.horizon = horizon;
  return normalizer;
}

at::Tensor AggregateLoss(const at::Tensor& loss, const at::Tensor& mask,
                         LossAggregation mode,
                         const LossNormalizer& normalizer) {
  const at::Tensor m = mask.to(loss.scalar_type());
  const double sequences = std::max(normalizer.sequences, 1.0);
  switch (mode) {
    case LossAggregation::kTokenMean:
      return (loss * m).sum() / std::max(normalizer.tokens, 1.0);
    case LossAggregation::kSeqMeanTokenMean: {
      const at::Tensor counts = m.sum(-1);
      const at::Tensor per_sequence = (loss * m).sum(-1) / (counts + 1e-8);
      return (per_sequence * (counts > 0).to(loss.scalar_type())).sum() /
             sequences;
    }
    case LossAggregation::kSeqMeanTokenSum:
      return (loss * m).sum() / sequences;
    case LossAggregation::kSeqMeanTokenSumNorm:
      return (loss * m).sum() / sequences / normalizer.horizon;
  }
  return (loss * m).sum();
}

absl::StatusOr<KlEstimator> ParseKlEstimator(absl::string_view name) {
  return ParseEnumName("KL estimator", name, kKlEstimatorNames);
}

const char* KlEstimatorName(KlEstimator estimator) {
  return NameOf(estimator, kKlEstimatorNames, "unknown");
}

at::Tensor KlPenalty(const at::Tensor& logprob, const at::Tensor& ref_logprob,
                     KlEstimator estimator) {
  switch (estimator) {
    case KlEstimator::kK1:
      return logprob - ref_logprob;
    case KlEstimator::kK2:
      return 0.5 * (logprob - ref_logprob).square();
    case KlEstimator::kK3: {
      const at::Tensor log_ratio = (ref_logprob - logprob).clamp(-20, 20);
      return (log_ratio.exp() - log_ratio - 1).clamp(-10, 10);
    }
  }
  return logprob - ref_logprob;
}

PolicyLossResult PolicyLoss(const at::Tensor& logprob,
                            const at::Tensor& old_logprob,
                            const at::Tensor& advantages,
                            const at::Tensor& mask,
                            const PolicyLossOptions& options,
                            const LossNormalizer& normalizer,
                            const at::Tensor& token_weights) {
  const at::Tensor m = mask.to(logprob.scalar_type());
  const at::Tensor adv =
      advantages.dim() == 1 ? advantages.unsqueeze(1) : advantages;
  const at::Tensor log_ratio = (logprob - old_logprob).clamp(-20, 20);
  const at::Tensor ratio = log_ratio.exp();
  const at::Tensor unclipped = -adv * ratio;
  const at::Tensor clipped =
      -adv * ratio.clamp(1 - options.clip_low, 1 + options.clip_high);
  const at::Tensor pessimistic = at::maximum(unclipped, clipped);
  at::Tensor per_token = pessimistic;
  PolicyLossResult result;
  const at::Tensor negative = (adv < 0).expand_as(ratio);
  const at::Tensor positive = (adv > 0).expand_as(ratio);
  if (options.dual_clip > 1) {
    const at::Tensor bound = -adv * options.dual_clip;
    per_token =
        at::where(negative, at::minimum(bound, pessimistic), pessimistic);
    result.dual_clip_fraction =
        MaskedMean(
            (pessimistic > bound).logical_and(negative).to(m.scalar_type()), m)
            .detach();
  } else {
    result.dual_clip_fraction = at::zeros({}, m.options());
  }
  if (token_weights.defined()) per_token = per_token * token_weights;
  result.loss = AggregateLoss(per_token, m, options.aggregation, normalizer);
  result.clip_high_fraction = MaskedMean((ratio > 1 + options.clip_high)
                                             .logical_and(positive)
                                             .to(m.scalar_type()),
                                         m)
                                  .detach();
  result.clip_low_fraction = MaskedMean((ratio < 1 - options.clip_low)
                                            .logical_and(negative)
                                            .to(m.scalar_type()),
                                        m)
                                 .detach();
  result.approx_kl = MaskedMean(-log_ratio, m).detach();
  return result;
}

OffPolicyWeights OffPolicyCorrection(const at::Tensor& old_logprob,
                                     const at::Tensor& rollout_logprob,
                                     const at::Tensor& mask,
                                     const OffPolicyOptions& options) {
  const at::Tensor m = mask.to(old_logprob.scalar_type());
  const at::Tensor log_ratio =
      ((old_logprob - rollout_logprob) * m).clamp(-20, 20).detach();
  const at::Tensor ratio = log_ratio.exp();
  OffPolicyWeights out;
  out.weights = at::ones_like(ratio);
  out.truncated = at::zeros_like(ratio);
  if (options.tis_cap > 0) {
    out.weights = ratio.clamp_max(options.tis_cap);
    out.truncated = (ratio > options.tis_cap).to(ratio.scalar_type()) * m;
  }
  at::Tensor keep = at::ones_like(ratio);
  if (options.mask == IsMask::kToken) {
    keep = (ratio >= options.mask_low).logical_and(ratio <= options.mask_high);
  } else if (options.mask == IsMask::kSequence) {
    // The geometric mean of the sequence's token ratios.
    const at::Tensor sequence =
        (log_ratio.sum(1) / m.sum(1).clamp_min(1)).exp().unsqueeze(1);
    keep = (sequence >= options.mask_low)
               .logical_and(sequence <= options.mask_high)
               .expand_as(ratio);
  }
  keep = keep.to(ratio.scalar_type());
  out.weights = out.weights * keep;
  out.masked = (1 - keep) * m;
  return out;
}

GrpoLossResult GrpoLoss(const at::Tensor& logprob,
                        const at::Tensor& old_logprob,
                        const at::Tensor& ref_logprob,
                        const at::Tensor& entropy, const at::Tensor& advantages,
                        const at::Tensor& mask, const GrpoLossOptions& options,
                        const LossNormalizer& normalizer,
                        const at::Tensor& token_weights) {
  GrpoLossResult result;
  result.policy = PolicyLoss(logprob, old_logprob, advantages, mask,
                             options.policy, normalizer, token_weights);
  result.loss = result.policy.loss;
  const LossAggregation mode = options.policy.aggregation;
  if (options.kl_coef != 0 && ref_logprob.defined()) {
    result.kl =
        AggregateLoss(KlPenalty(logprob, ref_logprob, options.kl_estimator),
                      mask, mode, normalizer);
    result.loss = result.loss + options.kl_coef * result.kl;
  }
  if (entropy.defined()) {
    result.entropy = AggregateLoss(entropy, mask, mode, normalizer);
    if (options.entropy_coef != 0) {
      result.loss = result.loss - options.entropy_coef * result.entropy;
    }
  }
  return result;
}

}  // namespace microrl::learner
