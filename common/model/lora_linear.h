#ifndef MICRORL_COMMON_MODEL_LORA_LINEAR_H_
#define MICRORL_COMMON_MODEL_LORA_LINEAR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "common/model/lora.h"

// LoRA at the matmul: the decoder's linear layers with an adapter's update
// added where it has one, so one set of frozen base weights serves the base
// model and every adapter.
namespace microrl::model {

// y = x W^T + b, plus scale * (x A^T) B^T computed in the activations' dtype
// (as PEFT under bf16 autocast, the way TRL and verl train): on the GPU LoRA's
// matmuls run in bfloat16 while the learner's master weights stay float32 (the
// cast is differentiable, so their gradients are float32); on the CPU all is
// float32. `bias` may be undefined, `lora` null.
// With `packed` (PackWeight of `weight`), products of few rows without
// autograd (decoding) read the packed form.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias, const LoraLinear* lora,
                  const at::Tensor& packed = at::Tensor());

// Linear layers that read the same x, as one matmul over their concatenated
// weights [sum of sizes, in] (bias likewise, or undefined): returns each one's
// output [..., size], with its LoRA (if `lora` has it) added as Linear does,
// then, when `whole`, the whole output [..., sum of sizes]: the product whose
// slices they are, or, in training (an adapter whose weights require grad),
// where each part is a product of its own, their concatenation.
// The adapted modules' A go through one matmul as well: the adapter's fused A
// when it has one and autograd is off (the rollout server), else their
// concatenation (inside autograd: the learner's gradients reach each A).
std::vector<at::Tensor> FusedLinear(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const std::vector<int64_t>& sizes,
    const std::vector<const LoraLinear*>& lora, const at::Tensor& fused_a,
    const at::Tensor& packed = at::Tensor(), bool whole = true);

// MKL's packed form of a float32 CPU weight [out, in], for x W^T through
// cblas_sgemm_compute: LibTorch's linear repacks W on every call, which took a
// fifth of a qwen2-100m decode step on 2 cores (measured with perf). Undefined
// when `weight` is not a float32 CPU tensor or this LibTorch has no MKL.
// Costs about 1.6x the weight's bytes plus 9 MB (MKL's format), so weights of
// fewer than `min_elements` stay unpacked (undefined) too: the CPU demo's
// 0.45M-parameter model would have taken 107 MB.
inline constexpr int64_t kPackMinElements = int64_t{1} << 18;
at::Tensor PackWeight(const at::Tensor& weight,
                      int64_t min_elements = kPackMinElements);
// Whether this LibTorch has MKL's packed products (the x86 PyPI wheels do).
bool PackedProductsAvailable();
// Bytes a PackWeight result holds (0 if undefined).
int64_t PackedBytes(const at::Tensor& packed);
// Products of at most this many rows use a packed weight; above it LibTorch's
// own path was as fast or faster (prefill).
inline constexpr int64_t kPackedMaxRows = 256;
// x W^T + b through `packed` when it is defined and the product qualifies
// (rows <= kPackedMaxRows, float32, no autograd), else at::linear.
at::Tensor BaseLinear(const at::Tensor& x, const at::Tensor& weight,
                      const at::Tensor& bias, const at::Tensor& packed);

// The adapter's LoRA of `module` in `layer` (null without an adapter or when
// the module is not adapted).
const LoraLinear* FindLora(const LoraAdapter* adapter, int64_t layer,
                           LoraModule module);
// The same for each module of a group, in the group's order.
std::vector<const LoraLinear*> GroupLora(const LoraAdapter* adapter,
                                         int64_t layer, LoraGroup group);
// The group's fused A (undefined without an adapter or fused A).
const at::Tensor& GroupFusedA(const LoraAdapter* adapter, int64_t layer,
                              LoraGroup group);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_LORA_LINEAR_H_
