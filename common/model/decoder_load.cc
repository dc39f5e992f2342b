// Decoder::Load and FromTensors: a checkpoint's tensors by name, checked
// against the config, moved to the device and dtype, and fused where layers
// read the same input.
#include <ATen/ATen.h>

#include <exception>
#include <initializer_list>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/model/attention.h"
#include "common/model/checkpoint.h"
#include "common/model/decoder.h"
#include "common/model/lora_linear.h"
#include "common/model/rope.h"

namespace microrl::model {

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::Load(
    const std::string& dir, const DecoderOptions& options) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::map<std::string, at::Tensor>> tensors =
      OpenCheckpoint(dir);
  if (!tensors.ok()) return tensors.status();
  absl::StatusOr<std::unique_ptr<Decoder>> decoder =
      FromTensors(*config, *tensors, options);
  if (!decoder.ok()) {
    return absl::Status(decoder.status().code(),
                        absl::StrCat(dir, ": ", decoder.status().message()));
  }
  return decoder;
}

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::FromTensors(
    const ModelConfig& config, const std::map<std::string, at::Tensor>& tensors,
    const DecoderOptions& options) {
  std::unique_ptr<Decoder> decoder(new Decoder);
  decoder->config_ = config;
  decoder->options_ = options;
  const ModelConfig& c = config;
  // Fetches a tensor, checks its shape and moves it to the device and dtype.
  auto take = [&](const std::string& name,
                  std::vector<int64_t> shape) -> absl::StatusOr<at::Tensor> {
    const auto it = tensors.find(name);
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing tensor \"", name, "\""));
    }
    if (it->second.sizes() != at::IntArrayRef(shape)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", name, "\" has shape ", c10::str(it->second.sizes()),
          ", the config implies ", c10::str(at::IntArrayRef(shape))));
    }
    if (!at::isFloatingType(it->second.scalar_type())) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", name, "\" is not floating point"));
    }
    return it->second.to(options.device, options.dtype).contiguous();
  };
  auto load = [&]() -> absl::Status {
    const int64_t q_out = c.num_heads * c.head_dim;
    const int64_t kv_out = c.num_kv_heads * c.head_dim;
    absl::StatusOr<at::Tensor> t =
        take("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
    if (!t.ok()) return t.status();
    decoder->embed_ = *t;
    if (!(t = take("model.norm.weight", {c.hidden_size})).ok())
      return t.status();
    decoder->final_norm_ = *t;
    if (c.tie_word_embeddings) {
      decoder->lm_head_ = decoder->embed_;
    } else {
      if (!(t = take("lm_head.weight", {c.vocab_size, c.hidden_size})).ok())
        return t.status();
      decoder->lm_head_ = *t;
    }
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string p = absl::StrCat("model.layers.", i, ".");
      LayerWeights w;
      struct Want {
        at::Tensor* field;
        std::string name;
        std::vector<int64_t> shape;
        bool present;
      };
      const std::vector<Want> wants = {
          {&w.input_norm, "input_layernorm.weight", {c.hidden_size}, true},
          {&w.post_norm,
           "post_attention_layernorm.weight",
           {c.hidden_size},
           true},
          {&w.q, "self_attn.q_proj.weight", {q_out, c.hidden_size}, true},
          {&w.k, "self_attn.k_proj.weight", {kv_out, c.hidden_size}, true},
          {&w.v, "self_attn.v_proj.weight", {kv_out, c.hidden_size}, true},
          {&w.o, "self_attn.o_proj.weight", {c.hidden_size, q_out}, true},
          {&w.q_bias, "self_attn.q_proj.bias", {q_out}, c.qkv_bias},
          {&w.k_bias, "self_attn.k_proj.bias", {kv_out}, c.qkv_bias},
          {&w.v_bias, "self_attn.v_proj.bias", {kv_out}, c.qkv_bias},
          {&w.o_bias, "self_attn.o_proj.bias", {c.hidden_size}, c.o_bias},
          {&w.q_norm, "self_attn.q_norm.weight", {c.head_dim}, c.qk_norm},
          {&w.k_norm, "self_attn.k_norm.weight", {c.head_dim}, c.qk_norm},
          {&w.gate,
           "mlp.gate_proj.weight",
           {c.intermediate_size, c.hidden_size},
           true},
          {&w.up,
           "mlp.up_proj.weight",
           {c.intermediate_size, c.hidden_size},
           true},
          {&w.down,
           "mlp.down_proj.weight",
           {c.hidden_size, c.intermediate_size},
           true},
          {&w.gate_bias,
           "mlp.gate_proj.bias",
           {c.intermediate_size},
           c.mlp_bias},
          {&w.up_bias, "mlp.up_proj.bias", {c.intermediate_size}, c.mlp_bias},
          {&w.down_bias, "mlp.down_proj.bias", {c.hidden_size}, c.mlp_bias},
      };
      for (const Want& want : wants) {
        if (!want.present) continue;
        if (!(t = take(p + want.name, want.shape)).ok()) return t.status();
        *want.field = *t;
      }
      // One weight (and bias) per group of layers that read the same input;
      // the separate ones become views of it, so nothing is held twice.
      auto fuse = [](std::vector<at::Tensor*> parts) {
        std::vector<at::Tensor> tensors;
        for (at::Tensor* part : parts) tensors.push_back(*part);
        at::Tensor fused = at::cat(tensors);
        int64_t offset = 0;
        for (at::Tensor* part : parts) {
          const int64_t rows = part->size(0);
          *part = fused.narrow(0, offset, rows);
          offset += rows;
        }
        return fused;
      };
      w.qkv = fuse({&w.q, &w.k, &w.v});
      if (c.qkv_bias) w.qkv_bias = fuse({&w.q_bias, &w.k_bias, &w.v_bias});
      w.gate_up = fuse({&w.gate, &w.up});
      if (c.qk_norm) {  // one weight per head of q and k side by side
        w.qk_norm = at::cat({w.q_norm.expand({c.num_heads, c.head_dim}),
                             w.k_norm.expand({c.num_kv_heads, c.head_dim})});
      }
      if (c.mlp_bias) w.gate_up_bias = fuse({&w.gate_bias, &w.up_bias});
      decoder->layers_.push_back(std::move(w));
    }
    const at::Tensor inv_freq = RopeInverseFrequencies(c);
    decoder->inv_freq_ = inv_freq.to(options.device);
    // Attention scores in float32 where cuBLAS writes them so, else rounded
    // to the model's dtype first (a choice made here once, per decoder).
    if (!CudaBmmWritesFloat32(options.device, options.dtype)) {
      decoder->score_output_ = ScoreOutput::kInputDtype;
      MRL_LOG(WARNING) << "bmm with float32 output is unavailable for "
                       << c10::toString(options.dtype)
                       << " here: attention scores are rounded to it";
    }
    return absl::OkStatus();
  };
  try {
    if (absl::Status status = load(); !status.ok()) return status;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading weights: ", e.what()));
  }
  return decoder;
}

absl::StatusOr<int64_t> Decoder::PackWeights(int64_t min_elements) {
  if (!PackedProductsAvailable() || options_.device.is_cuda() ||
      options_.dtype != at::kFloat) {
    return 0;
  }
  try {
    at::NoGradGuard no_grad;
    int64_t bytes = 0;
    for (LayerWeights& w : layers_) {
      w.qkv_packed = PackWeight(w.qkv, min_elements);
      w.o_packed = PackWeight(w.o, min_elements);
      w.gate_up_packed = PackWeight(w.gate_up, min_elements);
      w.down_packed = PackWeight(w.down, min_elements);
      bytes += PackedBytes(w.qkv_packed) + PackedBytes(w.o_packed) +
               PackedBytes(w.gate_up_packed) + PackedBytes(w.down_packed);
    }
    lm_head_packed_ = PackWeight(lm_head_, min_elements);
    pack_min_elements_ = min_elements;
    packs_weights_ = true;
    return bytes + PackedBytes(lm_head_packed_);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("PackWeights: ", e.what()));
  }
}

absl::Status Decoder::MergeAdapter(LoraAdapter& adapter) const {
  if (adapter.num_layers() != config_.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("MergeAdapter: the adapter has ", adapter.num_layers(),
                     " layers; the model has ", config_.num_layers));
  }
  for (const at::Tensor& parameter : adapter.Parameters()) {
    if (parameter.requires_grad()) {
      return absl::FailedPreconditionError(
          "MergeAdapter: the adapter is being trained (its weights require "
          "grad); merged weights would take no gradient");
    }
  }
  try {
    at::NoGradGuard no_grad;
    std::vector<LoraAdapter::MergedLinears> merged(layers_.size());
    for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
      const LayerWeights& w = layers_[layer];
      // W + scale B A of the modules stacked in `weight` (rows in order),
      // added in float32 and stored in the weight's dtype.
      auto merge =
          [&](const at::Tensor& weight,
              std::initializer_list<std::pair<LoraModule, int64_t>> modules) {
            bool adapted = false;
            for (const auto& [module, rows] : modules) {
              adapted = adapted || adapter.Find(layer, module) != nullptr;
            }
            if (!adapted) return weight;  // the base's own, not a copy
            std::vector<at::Tensor> deltas;
            for (const auto& [module, rows] : modules) {
              const LoraLinear* lora = adapter.Find(layer, module);
              deltas.push_back(
                  lora == nullptr
                      ? at::zeros({rows, weight.size(1)},
                                  weight.options().dtype(at::kFloat))
                      : at::matmul(lora->b.to(weight.device(), at::kFloat),
                                   lora->a.to(weight.device(), at::kFloat))
                            .mul_(lora->scale));
            }
            return (weight.to(at::kFloat) + at::cat(deltas))
                .to(weight.scalar_type())
                .contiguous();
          };
      const int64_t q_rows = config_.num_heads * config_.head_dim;
      const int64_t kv_rows = config_.num_kv_heads * config_.head_dim;
      merged[layer].qkv = merge(w.qkv, {{LoraModule::kQ, q_rows},
                                        {LoraModule::kK, kv_rows},
                                        {LoraModule::kV, kv_rows}});
      merged[layer].o = merge(w.o, {{LoraModule::kO, w.o.size(0)}});
      merged[layer].gate_up =
          merge(w.gate_up, {{LoraModule::kGate, config_.intermediate_size},
                            {LoraModule::kUp, config_.intermediate_size}});
      merged[layer].down = merge(w.down, {{LoraModule::kDown, w.down.size(0)}});
      if (packs_weights_) {
        // A group the adapter leaves alone reads the base's packed weight.
        auto pack = [this](const at::Tensor& merged_weight,
                           const at::Tensor& base,
                           const at::Tensor& base_packed) {
          return merged_weight.is_same(base)
                     ? base_packed
                     : PackWeight(merged_weight, pack_min_elements_);
        };
        LoraAdapter::MergedLinears& m = merged[layer];
        m.qkv_packed = pack(m.qkv, w.qkv, w.qkv_packed);
        m.o_packed = pack(m.o, w.o, w.o_packed);
        m.gate_up_packed = pack(m.gate_up, w.gate_up, w.gate_up_packed);
        m.down_packed = pack(m.down, w.down, w.down_packed);
      }
    }
    adapter.SetMerged(std::move(merged));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("MergeAdapter: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace microrl::model
