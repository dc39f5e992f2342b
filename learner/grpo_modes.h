#ifndef MICRORL_LEARNER_GRPO_MODES_H_
#define MICRORL_LEARNER_GRPO_MODES_H_

// GRPO's modes, as the configuration names them (no LibTorch: the config
// holds them). grpo.h computes with them.
#include "common/base/enum_names.h"

namespace microrl::learner {

// How a reward becomes an advantage.
enum class AdvantageNorm {
  kGroupStd,  // (r - group mean) / (group std + eps): GRPO
  kNone,      // r - group mean: Dr. GRPO
  kBatchStd,  // (r - group mean) / (std of the whole batch + eps)
};
inline constexpr EnumName<AdvantageNorm> kAdvantageNormNames[] = {
    {AdvantageNorm::kGroupStd, "group"},
    {AdvantageNorm::kNone, "none"},
    {AdvantageNorm::kBatchStd, "batch"}};

// How per-token losses [B, T] become one number.
enum class LossAggregation {
  kTokenMean,            // sum over all tokens / tokens
  kSeqMeanTokenMean,     // mean over sequences of each sequence's token mean
  kSeqMeanTokenSum,      // mean over sequences of each sequence's token sum
  kSeqMeanTokenSumNorm,  // kSeqMeanTokenSum / horizon (Dr. GRPO's constant)
};
inline constexpr EnumName<LossAggregation> kLossAggregationNames[] = {
    {LossAggregation::kTokenMean, "token-mean"},
    {LossAggregation::kSeqMeanTokenMean, "seq-mean-token-mean"},
    {LossAggregation::kSeqMeanTokenSum, "seq-mean-token-sum"},
    {LossAggregation::kSeqMeanTokenSumNorm, "seq-mean-token-sum-norm"}};

// KL penalty estimators of Schulman's "Approximating KL divergence".
// The configuration takes the own names; the aliases are verl's.
enum class KlEstimator { kK1, kK2, kK3 };
inline constexpr EnumName<KlEstimator> kKlEstimatorNames[] = {
    {KlEstimator::kK1, "k1"},  {KlEstimator::kK2, "k2"},
    {KlEstimator::kK3, "k3"},  {KlEstimator::kK1, "kl"},
    {KlEstimator::kK2, "mse"}, {KlEstimator::kK3, "low_var_kl"}};

// Which off-policy tokens the loss leaves out (importance-ratio masking): none,
// each token whose ratio is out of bounds, or every token of a sequence whose
// ratio (the geometric mean of its tokens') is.
enum class IsMask { kNone, kToken, kSequence };
inline constexpr EnumName<IsMask> kIsMaskNames[] = {
    {IsMask::kNone, "none"},
    {IsMask::kToken, "token"},
    {IsMask::kSequence, "sequence"}};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_GRPO_MODES_H_
