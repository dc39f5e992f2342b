#ifndef MICRORL_LEARNER_GRPO_MODES_H_
#define MICRORL_LEARNER_GRPO_MODES_H_

// GRPO's modes, as the configuration names them (no LibTorch: the config
// holds them). grpo.h computes with them.
namespace microrl::learner {

// How a reward becomes an advantage.
enum class AdvantageNorm {
  kGroupStd,  // (r - group mean) / (group std + eps): GRPO
  kNone,      // r - group mean: Dr. GRPO
  kBatchStd,  // (r - group mean) / (std of the whole batch + eps)
};

// How per-token losses [B, T] become one number.
enum class LossAggregation {
  kTokenMean,            // sum over all tokens / tokens
  kSeqMeanTokenMean,     // mean over sequences of each sequence's token mean
  kSeqMeanTokenSum,      // mean over sequences of each sequence's token sum
  kSeqMeanTokenSumNorm,  // kSeqMeanTokenSum / horizon (Dr. GRPO's constant)
};

// KL penalty estimators of Schulman's "Approximating KL divergence".
enum class KlEstimator { kK1, kK2, kK3 };

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_GRPO_MODES_H_
