#include "common/model/layer_checkpoint.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <string>
#include <vector>

namespace microrl::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Gradient checkpointing of one layer: forward keeps only the layer's input;
// backward recomputes the layer with autograd on and differentiates it with
// respect to that input and the layer's LoRA weights (passed in `lora` so
// autograd routes their gradients here).
struct CheckpointedLayerFunction
    : public torch::autograd::Function<CheckpointedLayerFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden,
                            at::TensorList lora, int64_t layer, int64_t decoder,
                            int64_t adapter, const at::Tensor& cos,
                            const at::Tensor& sin, int64_t packed) {
    ctx->save_for_backward({hidden, cos, sin});
    const auto* layout = reinterpret_cast<const PackedLayout*>(packed);
    ctx->saved_data["packed"] = layout != nullptr;
    if (layout != nullptr) {
      ctx->saved_data["positions"] = layout->positions;
      ctx->saved_data["output_index"] = layout->output_index;
      ctx->saved_data["query_index"] = layout->query_index;
      ctx->saved_data["key_index"] = layout->key_index;
      ctx->saved_data["buckets"] = static_cast<int64_t>(layout->allowed.size());
      for (size_t b = 0; b < layout->allowed.size(); ++b) {
        ctx->saved_data["allowed" + std::to_string(b)] = layout->allowed[b];
      }
    }
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["decoder"] = decoder;
    ctx->saved_data["adapter"] = adapter;
    ctx->saved_data["num_lora"] = static_cast<int64_t>(lora.size());
    for (size_t i = 0; i < lora.size(); ++i) {
      ctx->saved_data["lora" + std::to_string(i)] = lora[i];
    }
    return reinterpret_cast<const Decoder*>(decoder)->LayerForward(
        layer, hidden, cos, sin, reinterpret_cast<const LoraAdapter*>(adapter),
        layout);
  }

  static variable_list backward(AutogradContext* ctx,
                                variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const auto* decoder =
        reinterpret_cast<const Decoder*>(ctx->saved_data["decoder"].toInt());
    const auto* adapter = reinterpret_cast<const LoraAdapter*>(
        ctx->saved_data["adapter"].toInt());
    const int64_t layer = ctx->saved_data["layer"].toInt();
    const int64_t num_lora = ctx->saved_data["num_lora"].toInt();
    at::Tensor hidden = saved[0].detach().requires_grad_(true);
    variable_list inputs = {hidden};
    for (int64_t i = 0; i < num_lora; ++i) {
      inputs.push_back(ctx->saved_data["lora" + std::to_string(i)].toTensor());
    }
    PackedLayout layout;
    const bool packed = ctx->saved_data["packed"].toBool();
    if (packed) {
      layout.positions = ctx->saved_data["positions"].toTensor();
      layout.query_index = ctx->saved_data["query_index"].toTensor();
      layout.key_index = ctx->saved_data["key_index"].toTensor();
      const int64_t buckets = ctx->saved_data["buckets"].toInt();
      for (int64_t b = 0; b < buckets; ++b) {
        layout.allowed.push_back(
            ctx->saved_data["allowed" + std::to_string(b)].toTensor());
      }
      layout.output_index = ctx->saved_data["output_index"].toTensor();
      layout.tokens = layout.output_index.size(0);
    }
    at::Tensor output;
    {
      at::AutoGradMode enable(true);
      output = decoder->LayerForward(layer, hidden, saved[1], saved[2], adapter,
                                     packed ? &layout : nullptr);
    }
    variable_list grads =
        torch::autograd::grad({output}, inputs, {grad_outputs[0]},
                              /*retain_graph=*/false,
                              /*create_graph=*/false,
                              /*allow_unused=*/true);
    // One gradient per forward argument: hidden, each LoRA tensor, then none
    // for layer, decoder, adapter, cos, sin and packed.
    for (int i = 0; i < 6; ++i) grads.emplace_back();
    return grads;
  }
};

}  // namespace

at::Tensor CheckpointedLayer(const Decoder& decoder, int64_t layer,
                             const at::Tensor& hidden, const at::Tensor& cos,
                             const at::Tensor& sin, const LoraAdapter* adapter,
                             const PackedLayout* packed) {
  std::vector<at::Tensor> lora;
  if (adapter != nullptr) {
    for (int m = 0; m < kNumLoraModules; ++m) {
      const LoraLinear* linear =
          adapter->Find(layer, static_cast<LoraModule>(m));
      if (linear == nullptr) continue;
      lora.push_back(linear->a);
      lora.push_back(linear->b);
    }
  }
  return CheckpointedLayerFunction::apply(
      hidden, at::TensorList(lora), layer, reinterpret_cast<int64_t>(&decoder),
      reinterpret_cast<int64_t>(adapter), cos, sin,
      reinterpret_cast<int64_t>(packed));
}

}  // namespace microrl::model
