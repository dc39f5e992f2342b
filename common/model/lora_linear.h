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
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias, const LoraLinear* lora);

// Linear layers that read the same x, as one matmul over their concatenated
// weights [sum of sizes, in] (bias likewise, or undefined): returns each one's
// output [..., size], with its LoRA (if `lora` has it) added as Linear does,
// then the whole output [..., sum of sizes] whose slices they are.
// The adapted modules' A go through one matmul as well: the adapter's fused A
// when it has one and autograd is off (the rollout server), else their
// concatenation (inside autograd: the learner's gradients reach each A).
std::vector<at::Tensor> FusedLinear(const at::Tensor& x,
                                    const at::Tensor& weight,
                                    const at::Tensor& bias,
                                    const std::vector<int64_t>& sizes,
                                    const std::vector<const LoraLinear*>& lora,
                                    const at::Tensor& fused_a);

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
