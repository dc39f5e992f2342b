#ifndef MICRORL_ROLLOUT_SERVER_SAMPLER_H_
#define MICRORL_ROLLOUT_SERVER_SAMPLER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace microrl::rollout {

// Temperatures below this sample greedily (argmax; log-probs of
// log_softmax(logits)).
inline constexpr double kGreedyTemperature = 1e-5;

// Sampling parameters of one row (sequence).
struct RowSampling {
  double temperature = 1.0;  // < kGreedyTemperature: greedy
  double top_p = 1.0;        // (0, 1]
  int64_t top_k = 0;         // <= 0: off
  uint64_t seed = 0;         // the sequence's seed
  int64_t position = 0;  // index of the token being sampled in the completion
  int top_logprobs = 0;  // alternatives to report (SampleResult::top_*)
};

struct SampleResult {
  at::Tensor tokens;    // [N] int64
  at::Tensor logprobs;  // [N] float32: log_softmax(logits / T)[token] (T = 1
                        // when greedy)
  // When a row asks for top log-probs: [N, K] (K the most any row asks for)
  // token ids (int64) and log-probs (float32) of the same distribution, most
  // likely first; undefined otherwise.
  at::Tensor top_ids;
  at::Tensor top_logprobs;
};

// Samples one token per row of `logits` [N, V] (any float dtype, any device),
// as a chain of small steps: temperature, log-probs (reported before
// truncation), top-k, top-p, then inverse-CDF sampling with one uniform number
// per row drawn from (seed, position). A sequence's samples therefore depend
// only on its own seed, position and logits, not on the batch it shares or on
// timing. Runs on the logits' device; the only host-to-device transfers are the
// per-row parameters (N values each), and nothing is read back.
SampleResult Sample(const at::Tensor& logits,
                    const std::vector<RowSampling>& rows);

// The steps, exposed for tests: [N, V] float32 in, [N, V] out, dropped tokens
// -inf.
at::Tensor TopKMask(const at::Tensor& scaled,
                    const std::vector<int64_t>& top_k);
// On the CPU TopPMask selects each row's nucleus without sorting; elsewhere
// (and in TopPMaskBySort, which tests compare it with) it sorts.
at::Tensor TopPMask(const at::Tensor& scaled, const std::vector<double>& top_p);
at::Tensor TopPMaskBySort(const at::Tensor& scaled,
                          const std::vector<double>& top_p);
// The uniform (0, 1) number that samples token `position` of a sequence with
// `seed`.
double RowUniform(uint64_t seed, int64_t position);

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_SAMPLER_H_
