#ifndef MICRORL_COMMON_MODEL_ROPE_H_
#define MICRORL_COMMON_MODEL_ROPE_H_

#include <ATen/core/Tensor.h>

#include <utility>

#include "common/model/config.h"

// Rotary position embeddings (RoPE), as transformers computes them for Qwen2,
// Qwen3 and Llama (llama3 frequency scaling included).
namespace microrl::model {

// The inverse frequencies [head_dim / 2], float32 on the CPU: theta^(-2i/D),
// rescaled by rope_scaling's llama3 rule when the config has it.
at::Tensor RopeInverseFrequencies(const ModelConfig& config);

// cos and signed sin tables [..., head_dim] in `dtype` for `positions` [...]:
// cos of the frequencies twice, and [-sin, sin] over the two halves, the form
// ApplyRotary takes.
std::pair<at::Tensor, at::Tensor> RotaryTables(const at::Tensor& positions,
                                               const at::Tensor& inv_freq,
                                               at::ScalarType dtype);

// x [B, T, heads, D] rotated by cos/sin [B, T, D] (rotate-half convention,
// x cos + rotate_half(x) sin) where `sin` is signed as RotaryTables returns
// it: rotate_half(x) sin = roll(x, D/2) signed_sin. Three kernels
// (transformers' formula is five).
at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_ROPE_H_
