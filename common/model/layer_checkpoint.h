#ifndef MICRORL_COMMON_MODEL_LAYER_CHECKPOINT_H_
#define MICRORL_COMMON_MODEL_LAYER_CHECKPOINT_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "common/model/decoder.h"
#include "common/model/lora.h"

namespace microrl::model {

// Gradient checkpointing of one decoder layer: its output, with only its input
// kept for backward, which recomputes the layer with autograd on and
// differentiates it with respect to that input and the layer's LoRA weights
// (so the adapter's gradients are as without checkpointing). With `packed`,
// the layer runs on a packed row; the layout's tensors are kept for backward
// (the layout itself need not outlive the call).
at::Tensor CheckpointedLayer(const Decoder& decoder, int64_t layer,
                             const at::Tensor& hidden, const at::Tensor& cos,
                             const at::Tensor& sin, const LoraAdapter* adapter,
                             const PackedLayout* packed = nullptr);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_LAYER_CHECKPOINT_H_
