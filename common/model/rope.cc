#include "common/model/rope.h"

#include <ATen/ATen.h>

#include <cmath>

namespace microrl::model {

at::Tensor RopeInverseFrequencies(const ModelConfig& c) {
  // Computed as transformers does, in float32.
  at::Tensor inv_freq =
      1.0 / at::pow(c.rope.theta,
                    at::arange(0, c.head_dim, 2, at::kLong).to(at::kFloat) /
                        c.head_dim);
  if (c.rope.llama3_scaling) {
    const double old_context =
        static_cast<double>(c.rope.original_max_position_embeddings);
    const double low_wavelen = old_context / c.rope.low_freq_factor;
    const double high_wavelen = old_context / c.rope.high_freq_factor;
    const at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled =
        at::where(wavelen > low_wavelen, inv_freq / c.rope.factor, inv_freq);
    const at::Tensor smooth =
        (old_context / wavelen - c.rope.low_freq_factor) /
        (c.rope.high_freq_factor - c.rope.low_freq_factor);
    const at::Tensor smoothed =
        (1 - smooth) * scaled / c.rope.factor + smooth * scaled;
    const at::Tensor medium =
        (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv_freq = at::where(medium, smoothed, scaled);
  }
  return inv_freq;
}

std::pair<at::Tensor, at::Tensor> RotaryTables(const at::Tensor& positions,
                                               const at::Tensor& inv_freq,
                                               at::ScalarType dtype) {
  const at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;
  const at::Tensor sin = freqs.sin();
  return {at::cat({freqs, freqs}, /*dim=*/-1).cos().to(dtype),
          at::cat({-sin, sin}, /*dim=*/-1).to(dtype)};
}

at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin) {
  return at::addcmul(x * cos.unsqueeze(2), x.roll(x.size(-1) / 2, -1),
                     sin.unsqueeze(2));
}

}  // namespace microrl::model
