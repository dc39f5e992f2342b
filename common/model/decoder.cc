#include "common/model/decoder.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/autograd.h>

#include <atomic>
#include <cmath>
#include <exception>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/model/checkpoint.h"
#include "common/model/tensor_io.h"

namespace microrl::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Runs `body`, turning LibTorch's exceptions into a Status.
template <typename F>
auto Guarded(const char* what, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

// Hugging Face's RMSNorm: normalize in float32, cast back, then scale.
// As transformers computes it: normalized in float32, cast to x's dtype, then
// times the weight. ATen's rms_norm without a weight does the first two steps
// (in a fused kernel on CUDA; eight kernels here before), bit-identical on the
// CPU to the float32 formula.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return weight * at::rms_norm(x, {x.size(-1)}, /*weight=*/{}, eps);
}

// y = x W^T + b, plus scale * (x A^T) B^T computed in the activations' dtype
// (as PEFT under bf16 autocast, the way TRL and verl train): on the GPU LoRA's
// matmuls run in bfloat16 while the learner's master weights stay float32 (the
// cast is differentiable, so their gradients are float32); on the CPU all is
// float32.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias, const LoraLinear* lora) {
  at::Tensor y = at::linear(
      x, weight,
      bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
  if (lora == nullptr) return y;
  const at::ScalarType dtype = x.scalar_type();
  const at::Tensor a =
      lora->a.scalar_type() == dtype ? lora->a : lora->a.to(dtype);
  const at::Tensor b =
      lora->b.scalar_type() == dtype ? lora->b : lora->b.to(dtype);
  // y + scale * (x A^T) B^T with the second matmul, the scale and the sum in
  // one GEMM (addmm on 2-D views): two kernels per adapted layer, not four.
  const at::Tensor xa = at::linear(x, a);
  const int64_t out = y.size(-1);
  return at::addmm(y.reshape({-1, out}), xa.reshape({-1, xa.size(-1)}), b.t(),
                   /*beta=*/1, /*alpha=*/lora->scale)
      .view(y.sizes());
}

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
                                    const at::Tensor& fused_a) {
  const at::Tensor y = at::linear(
      x, weight,
      bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
  const at::ScalarType dtype = x.scalar_type();
  auto in_dtype = [dtype](const at::Tensor& t) {
    return t.scalar_type() == dtype ? t : t.to(dtype);
  };
  at::Tensor xa;  // [rows, sum of the adapted modules' ranks]
  std::vector<at::Tensor> as;
  for (const LoraLinear* linear : lora) {
    if (linear != nullptr) as.push_back(in_dtype(linear->a));
  }
  if (!as.empty()) {
    const at::Tensor a = fused_a.defined() && !at::GradMode::is_enabled()
                             ? in_dtype(fused_a)
                         : as.size() == 1 ? as.front()
                                          : at::cat(as);
    xa = at::linear(x.reshape({-1, x.size(-1)}), a);
  }
  const at::Tensor rows = y.view({-1, y.size(-1)});
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  std::vector<at::Tensor> outputs;
  int64_t offset = 0;
  int64_t rank_offset = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    at::Tensor part = rows.narrow(1, offset, sizes[i]);
    if (lora[i] != nullptr) {
      // part += scale * (x A^T) B^T: the second matmul, scale and sum in one,
      // in place, so that an output is the same view of y (same strides, same
      // kernels after it) with or without LoRA.
      const int64_t rank = lora[i]->a.size(0);
      part.addmm_(xa.narrow(1, rank_offset, rank), in_dtype(lora[i]->b).t(),
                  /*beta=*/1, /*alpha=*/lora[i]->scale);
      rank_offset += rank;
    }
    shape.back() = sizes[i];
    outputs.push_back(part.view(shape));
    offset += sizes[i];
  }
  outputs.push_back(y);  // whose slices the outputs are
  return outputs;
}

std::vector<const LoraLinear*> GroupLora(const LoraAdapter* adapter,
                                         int64_t layer, LoraGroup group) {
  std::vector<const LoraLinear*> lora;
  for (LoraModule module : LoraGroupModules(group)) {
    lora.push_back(adapter == nullptr ? nullptr : adapter->Find(layer, module));
  }
  return lora;
}

const at::Tensor& GroupFusedA(const LoraAdapter* adapter, int64_t layer,
                              LoraGroup group) {
  static const at::Tensor* const kNone = new at::Tensor();
  return adapter == nullptr ? *kNone : adapter->FusedA(layer, group);
}

// x [B, T, heads, D] rotated by cos/sin [B, T, D] (rotate-half convention,
// x cos + rotate_half(x) sin) where `sin` is signed as Rotary returns it,
// [-sin, sin] over the halves: rotate_half(x) sin = roll(x, D/2) signed_sin.
// Three kernels (transformers' formula is five).
at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin) {
  return at::addcmul(x * cos.unsqueeze(2), x.roll(x.size(-1) / 2, -1),
                     sin.unsqueeze(2));
}

// a @ b for batches of matrices, written in float32: on CUDA cuBLAS writes
// float32 from bfloat16 inputs (accumulating in float32 as always); elsewhere
// the inputs are cast first.
at::Tensor BmmFloat(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat) {
    return at::bmm(a, b);
  }
  if (a.is_cuda()) {
    // Should this LibTorch's cuBLAS path refuse the float32 output (it has not
    // run on a GPU yet), the matmul writes its own dtype, as transformers'
    // eager attention does, rather than decoding failing.
    static std::atomic<bool> float_output{true};
    if (float_output.load(std::memory_order_relaxed)) {
      try {
        return at::bmm(a, b, at::kFloat);
      } catch (const c10::OutOfMemoryError&) {
        throw;  // says nothing about the float32 output
      } catch (const c10::Error& e) {
        float_output = false;
        MRL_LOG(WARNING) << "bmm with float32 output failed ("
                         << e.what_without_backtrace()
                         << "); attention scores are rounded to "
                         << c10::toString(a.scalar_type()) << " from now on";
      }
    }
    return at::bmm(a, b).to(at::kFloat);
  }
  return at::bmm(a.to(at::kFloat), b.to(at::kFloat));
}

// Attention of new tokens q [N, T, heads, D] over cached keys and values
// [N, kv_heads, L, D] (views into the head-major cache, any slot stride),
// where hidden [N, 1, T, L] (true: not attended; computed once per step, not
// per layer) leaves at least one key per query.
// Returns [N, heads, T, D] in q's dtype.
//
// Two batched matmuls rather than SDPA: with a mask and grouped KV heads, SDPA
// on CUDA falls back to its math kernel, which repeats every KV head for each
// query head sharing it (a copy of the whole cache per layer and step). Here
// the query heads of a KV head are the rows of one matrix, so each KV head is
// read once and nothing is copied but q; scores and softmax are float32.
at::Tensor CachedAttention(const at::Tensor& q, const at::Tensor& keys,
                           const at::Tensor& values, const at::Tensor& hidden) {
  const int64_t rows = q.size(0);
  const int64_t steps = q.size(1);
  const int64_t heads = q.size(2);
  const int64_t head_dim = q.size(3);
  const int64_t kv_heads = keys.size(1);
  const int64_t length = keys.size(2);
  const int64_t group = heads / kv_heads;
  // [N * kv_heads, group * T, D]: query heads of a KV head as rows.
  const at::Tensor queries =
      q.view({rows, steps, kv_heads, group, head_dim})
          .permute({0, 2, 3, 1, 4})
          .reshape({rows * kv_heads, group * steps, head_dim});
  at::Tensor scores =
      BmmFloat(
          queries,
          keys.reshape({rows * kv_heads, length, head_dim}).transpose(1, 2))
          .view({rows, kv_heads, group, steps, length});
  scores.mul_(1.0 / std::sqrt(static_cast<double>(head_dim)));
  scores.masked_fill_(hidden.view({rows, 1, 1, steps, length}),
                      -std::numeric_limits<float>::infinity());
  // Probabilities in the values' dtype times the values, accumulated in
  // float32 by the matmul (as flash attention does).
  const at::Tensor probabilities =
      at::softmax(scores, -1).to(values.scalar_type());
  return at::bmm(probabilities.view({rows * kv_heads, group * steps, length}),
                 values.reshape({rows * kv_heads, length, head_dim}))
      .view({rows, heads, steps, head_dim});
}

// CachedAttention for one new token per row q [N, 1, heads, D] that also
// attends to a prompt held in a host slot: host_keys/host_values [hosts,
// kv_heads, Lp, D], the rows reading each host shared->rows [hosts, W], row
// n's entry there shared->entry[n], the host keys each entry does not read
// host_hidden [hosts, W, Lp] (maybe all). One softmax over a row's host keys
// and its own keys (hidden [N, 1, 1, L] as in CachedAttention), so the result
// is the attention over the
// prompt followed by the row's own tokens. Each host's keys and values are
// read once for all its rows: the queries of a host's rows are the rows of one
// matrix per KV head.
at::Tensor SharedPromptAttention(const at::Tensor& q, const at::Tensor& keys,
                                 const at::Tensor& values,
                                 const at::Tensor& hidden,
                                 const at::Tensor& host_keys,
                                 const at::Tensor& host_values,
                                 const at::Tensor& host_hidden,
                                 const SharedPrompts& shared) {
  const int64_t rows = q.size(0);
  const int64_t heads = q.size(2);
  const int64_t head_dim = q.size(3);
  const int64_t kv_heads = keys.size(1);
  const int64_t length = keys.size(2);
  const int64_t group = heads / kv_heads;
  const int64_t hosts = host_keys.size(0);
  const int64_t host_length = host_keys.size(2);
  const int64_t width = shared.rows.size(1);
  const at::ScalarType dtype = q.scalar_type();
  const at::Tensor queries = q.reshape({rows, kv_heads, group, head_dim});
  // Own keys: [N, kv_heads, group, L].
  const at::Tensor own =
      BmmFloat(
          queries.reshape({rows * kv_heads, group, head_dim}),
          keys.reshape({rows * kv_heads, length, head_dim}).transpose(1, 2))
          .view({rows, kv_heads, group, length})
          .masked_fill_(hidden.view({rows, 1, 1, length}),
                        -std::numeric_limits<float>::infinity());
  // Host keys: the queries of each host's entries, [hosts * kv_heads,
  // W * group, D], against its keys; then each row's entry, [N, kv_heads,
  // group, Lp].
  auto by_host = [&](const at::Tensor& per_entry, int64_t last) {
    // [hosts * W, kv_heads, group, last] -> [hosts * kv_heads, W * group, last]
    return per_entry.view({hosts, width, kv_heads, group, last})
        .permute({0, 2, 1, 3, 4})
        .reshape({hosts * kv_heads, width * group, last});
  };
  auto by_entry = [&](const at::Tensor& per_host, int64_t last) {
    // The inverse: [hosts * kv_heads, W * group, last] -> [hosts * W, ...]
    return per_host.view({hosts, kv_heads, width, group, last})
        .permute({0, 2, 1, 3, 4})
        .reshape({hosts * width, kv_heads, group, last});
  };
  at::Tensor host_scores =
      BmmFloat(
          by_host(queries.index_select(0, shared.rows.view({-1})), head_dim),
          host_keys.reshape({hosts * kv_heads, host_length, head_dim})
              .transpose(1, 2))
          .view({hosts, kv_heads, width, group, host_length})
          .masked_fill_(host_hidden.view({hosts, 1, width, 1, host_length}),
                        -std::numeric_limits<float>::infinity());
  const at::Tensor host_part =
      by_entry(host_scores.view({hosts * kv_heads, width * group, host_length}),
               host_length)
          .index_select(0, shared.entry);
  const at::Tensor probabilities =
      at::softmax(at::cat({host_part, own}, -1)
                      .mul_(1.0 / std::sqrt(static_cast<double>(head_dim))),
                  -1)
          .to(dtype);
  const at::Tensor from_own =
      BmmFloat(probabilities.narrow(-1, host_length, length)
                   .reshape({rows * kv_heads, group, length}),
               values.reshape({rows * kv_heads, length, head_dim}));
  // Each row's host probabilities back to its entry (padding entries: zero;
  // rows sharing an entry read no host key, so all write zeros to it).
  const at::Tensor entry_probabilities =
      at::zeros({hosts * width, kv_heads, group, host_length},
                probabilities.options())
          .index_copy_(0, shared.entry,
                       probabilities.narrow(-1, 0, host_length));
  const at::Tensor from_host =
      by_entry(BmmFloat(by_host(entry_probabilities, host_length),
                        host_values.reshape(
                            {hosts * kv_heads, host_length, head_dim})),
               head_dim)
          .index_select(0, shared.entry);
  return (from_own.view({rows, kv_heads, group, head_dim}) + from_host)
      .to(dtype)
      .view({rows, heads, 1, head_dim});
}

const LoraLinear* Lora(const LoraAdapter* adapter, int64_t layer,
                       LoraModule module) {
  return adapter == nullptr ? nullptr : adapter->Find(layer, module);
}

// Gradient checkpointing of one layer: forward keeps only the layer's input;
// backward recomputes the layer with autograd on and differentiates it with
// respect to that input and the layer's LoRA weights (passed in `lora` so
// autograd routes their gradients here).
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden,
                            at::TensorList lora, int64_t layer, int64_t decoder,
                            int64_t adapter, const at::Tensor& cos,
                            const at::Tensor& sin) {
    ctx->save_for_backward({hidden, cos, sin});
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["decoder"] = decoder;
    ctx->saved_data["adapter"] = adapter;
    ctx->saved_data["num_lora"] = static_cast<int64_t>(lora.size());
    for (size_t i = 0; i < lora.size(); ++i) {
      ctx->saved_data["lora" + std::to_string(i)] = lora[i];
    }
    return reinterpret_cast<const Decoder*>(decoder)->LayerForward(
        layer, hidden, cos, sin, reinterpret_cast<const LoraAdapter*>(adapter));
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
    at::Tensor output;
    {
      at::AutoGradMode enable(true);
      output =
          decoder->LayerForward(layer, hidden, saved[1], saved[2], adapter);
    }
    variable_list grads =
        torch::autograd::grad({output}, inputs, {grad_outputs[0]},
                              /*retain_graph=*/false,
                              /*create_graph=*/false,
                              /*allow_unused=*/true);
    // One gradient per forward argument: hidden, each LoRA tensor, then none
    // for layer, decoder, adapter, cos and sin.
    for (int i = 0; i < 5; ++i) grads.emplace_back();
    return grads;
  }
};

}  // namespace

// Keys and values a layer's attention reads besides the new tokens' own.
struct Decoder::CacheView {
  KvCache* cache;
  at::Tensor slot_index;  // [N, T] int64: slot of each new token
  at::Tensor positions;   // [N, T] int64: position of each new token
  at::Tensor slots;       // [N] int64
  int64_t first_slot;     // >= 0 if slots are first_slot, first_slot + 1, ...
  int64_t key_length;  // positions to attend over: max over rows of start + T
  at::Tensor hidden;   // [N, 1, T, key_length] bool, true: not attended;
                       // undefined: causal over the new tokens alone
  // Decode only: prompts in host slots read first, and which host keys each
  // entry does not read ([hosts, width, shared->key_length] bool).
  const SharedPrompts* shared = nullptr;
  at::Tensor host_hidden;
};

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
  absl::Status status = Guarded("loading weights", [&]() -> absl::Status {
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
    // Inverse RoPE frequencies computed as transformers does, in float32.
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
    decoder->inv_freq_ = inv_freq.to(options.device);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return decoder;
}

std::pair<at::Tensor, at::Tensor> Decoder::Rotary(
    const at::Tensor& positions) const {
  const at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;
  const at::Tensor sin = freqs.sin();
  return {at::cat({freqs, freqs}, /*dim=*/-1).cos().to(options_.dtype),
          at::cat({-sin, sin}, /*dim=*/-1).to(options_.dtype)};
}

at::Tensor Decoder::Attention(int64_t layer, const at::Tensor& x,
                              const at::Tensor& cos, const at::Tensor& sin,
                              const LoraAdapter* adapter,
                              const CacheView* cache) const {
  const LayerWeights& w = layers_[layer];
  const int64_t batch = x.size(0);
  const int64_t steps = x.size(1);
  const int64_t heads = config_.num_heads;
  const int64_t kv_heads = config_.num_kv_heads;
  const int64_t head_dim = config_.head_dim;
  const std::vector<at::Tensor> qkv =
      FusedLinear(x, w.qkv, w.qkv_bias,
                  {heads * head_dim, kv_heads * head_dim, kv_heads * head_dim},
                  GroupLora(adapter, layer, LoraGroup::kQkv),
                  GroupFusedA(adapter, layer, LoraGroup::kQkv));
  // q and k side by side in the projection's output, [B, T, heads + kv_heads,
  // D]: normalized (Qwen3) and rotated together.
  at::Tensor qk = qkv.back()
                      .narrow(-1, 0, (heads + kv_heads) * head_dim)
                      .view({batch, steps, heads + kv_heads, head_dim});
  if (config_.qk_norm) qk = RmsNorm(qk, w.qk_norm, config_.rms_norm_eps);
  qk = ApplyRotary(qk, cos, sin);
  const at::Tensor q = qk.narrow(2, 0, heads);  // [B, T, heads, D]
  const at::Tensor k = qk.narrow(2, heads, kv_heads);
  const at::Tensor v = qkv[2].view({batch, steps, kv_heads, head_dim});
  const bool gqa = heads != kv_heads;
  at::Tensor attended;  // [B, heads, T, D]
  if (cache != nullptr) {
    // keys[slot, :, position, :] = k[n, t, :, :] (the cache is head-major).
    using at::indexing::Slice;
    using at::indexing::TensorIndex;
    const std::initializer_list<TensorIndex> where = {
        TensorIndex(cache->slot_index), TensorIndex(Slice()),
        TensorIndex(cache->positions)};
    cache->cache->keys(layer).index_put_(where, k);
    cache->cache->values(layer).index_put_(where, v);
  }
  if (cache == nullptr || !cache->hidden.defined()) {
    // Causal over the new tokens alone (training, scoring, a fresh prompt):
    // SDPA's flash kernels, which take grouped KV heads as they are.
    attended = at::scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        /*attn_mask=*/{},
        /*dropout_p=*/0.0, /*is_causal=*/true, /*scale=*/c10::nullopt, gqa);
  } else {
    const at::Tensor& keys = cache->cache->keys(layer);
    const at::Tensor& values = cache->cache->values(layer);
    // [N, kv_heads, L, D], without a copy when the slots are consecutive.
    const int64_t length = cache->key_length;
    // (Scattered slots: only their first `length` positions are gathered.)
    const at::Tensor all_keys =
        cache->first_slot >= 0
            ? keys.narrow(0, cache->first_slot, batch).narrow(2, 0, length)
            : keys.narrow(2, 0, length).index_select(0, cache->slots);
    const at::Tensor all_values =
        cache->first_slot >= 0
            ? values.narrow(0, cache->first_slot, batch).narrow(2, 0, length)
            : values.narrow(2, 0, length).index_select(0, cache->slots);
    if (cache->shared != nullptr) {
      const SharedPrompts& shared = *cache->shared;
      const int64_t hosts = shared.rows.size(0);
      attended =
          SharedPromptAttention(q, all_keys, all_values, cache->hidden,
                                keys.narrow(0, shared.first_slot, hosts)
                                    .narrow(2, 0, shared.key_length),
                                values.narrow(0, shared.first_slot, hosts)
                                    .narrow(2, 0, shared.key_length),
                                cache->host_hidden, shared);
    } else {
      attended = CachedAttention(q, all_keys, all_values, cache->hidden);
    }
  }
  const at::Tensor merged =
      attended.transpose(1, 2).reshape({batch, steps, heads * head_dim});
  return Linear(merged, w.o, w.o_bias, Lora(adapter, layer, LoraModule::kO));
}

at::Tensor Decoder::Layer(int64_t layer, const at::Tensor& hidden,
                          const at::Tensor& cos, const at::Tensor& sin,
                          const LoraAdapter* adapter,
                          const CacheView* cache) const {
  const LayerWeights& w = layers_[layer];
  const at::Tensor attended =
      Attention(layer, RmsNorm(hidden, w.input_norm, config_.rms_norm_eps), cos,
                sin, adapter, cache);
  const at::Tensor h = hidden + attended;
  const at::Tensor x = RmsNorm(h, w.post_norm, config_.rms_norm_eps);
  const std::vector<at::Tensor> gate_up =
      FusedLinear(x, w.gate_up, w.gate_up_bias,
                  {config_.intermediate_size, config_.intermediate_size},
                  GroupLora(adapter, layer, LoraGroup::kGateUp),
                  GroupFusedA(adapter, layer, LoraGroup::kGateUp));
  return h + Linear(at::silu(gate_up[0]) * gate_up[1], w.down, w.down_bias,
                    Lora(adapter, layer, LoraModule::kDown));
}

at::Tensor Decoder::LayerForward(int64_t layer, const at::Tensor& hidden,
                                 const at::Tensor& cos, const at::Tensor& sin,
                                 const LoraAdapter* adapter) const {
  return Layer(layer, hidden, cos, sin, adapter, nullptr);
}

absl::StatusOr<at::Tensor> Decoder::Forward(const at::Tensor& ids,
                                            const RunOptions& run) const {
  if (ids.dim() != 2 || ids.scalar_type() != at::kLong) {
    return absl::InvalidArgumentError(
        "Forward: ids must be a [batch, steps] int64 tensor");
  }
  return Guarded("Forward", [&]() -> absl::StatusOr<at::Tensor> {
    const at::Tensor on_device = ids.to(options_.device);
    const at::Tensor positions = at::arange(ids.size(1), on_device.options())
                                     .unsqueeze(0)
                                     .expand({ids.size(0), -1});
    const auto [cos, sin] = Rotary(positions);
    at::Tensor hidden = at::embedding(embed_, on_device);
    for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
      if (run.gradient_checkpointing && at::GradMode::is_enabled()) {
        std::vector<at::Tensor> lora;
        if (run.adapter != nullptr) {
          for (int m = 0; m < kNumLoraModules; ++m) {
            const LoraLinear* linear =
                run.adapter->Find(layer, static_cast<LoraModule>(m));
            if (linear == nullptr) continue;
            lora.push_back(linear->a);
            lora.push_back(linear->b);
          }
        }
        hidden = CheckpointedLayer::apply(
            hidden, at::TensorList(lora), layer,
            reinterpret_cast<int64_t>(this),
            reinterpret_cast<int64_t>(run.adapter), cos, sin);
      } else {
        hidden = Layer(layer, hidden, cos, sin, run.adapter, nullptr);
      }
    }
    return RmsNorm(hidden, final_norm_, config_.rms_norm_eps);
  });
}

at::Tensor Decoder::RunCached(const at::Tensor& ids,
                              const at::Tensor& rotary_positions,
                              const CacheView& view,
                              const RunOptions& run) const {
  const auto [cos, sin] = Rotary(rotary_positions);
  at::Tensor hidden = at::embedding(embed_, ids);
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
    hidden = Layer(layer, hidden, cos, sin, run.adapter, &view);
  }
  return RmsNorm(hidden, final_norm_, config_.rms_norm_eps);
}

at::Tensor Decoder::DecodeOnDevice(const at::Tensor& ids,
                                   const at::Tensor& positions,
                                   int64_t first_slot, int64_t key_length,
                                   KvCache& cache, const RunOptions& run,
                                   const at::Tensor& rotary_offsets,
                                   const SharedPrompts* shared) const {
  c10::InferenceMode inference;
  const int64_t rows = ids.size(0);
  const auto long_options =
      at::TensorOptions().dtype(at::kLong).device(options_.device);
  const at::Tensor position = positions.view({rows, 1});  // [N, T = 1]
  CacheView view;
  view.cache = &cache;
  view.slots = at::arange(first_slot, first_slot + rows, long_options);
  view.slot_index = view.slots.unsqueeze(1);
  view.positions = position;
  view.first_slot = first_slot;
  view.key_length = key_length;
  view.hidden =
      at::arange(key_length, long_options).view({1, 1, 1, key_length}) >
      position.view({rows, 1, 1, 1});
  if (shared != nullptr) {
    view.shared = shared;
    const at::Tensor host_positions =
        at::arange(shared->key_length, long_options);
    view.host_hidden =
        (host_positions < shared->starts.unsqueeze(-1))
            .logical_or_(host_positions >= shared->ends.unsqueeze(-1));
  }
  return RunCached(ids,
                   rotary_offsets.defined()
                       ? position + rotary_offsets.view({rows, 1}).to(at::kLong)
                       : position,
                   view, run);
}

absl::StatusOr<at::Tensor> Decoder::PrefillAt(
    const at::Tensor& ids, const std::vector<int64_t>& slots,
    const std::vector<int64_t>& offsets, const std::vector<int64_t>& new_tokens,
    KvCache& cache, const RunOptions& run) const {
  if (ids.dim() != 2 || ids.scalar_type() != at::kLong) {
    return absl::InvalidArgumentError(
        "PrefillAt: ids must be a [rows, steps] int64 tensor");
  }
  const int64_t rows = ids.size(0);
  const int64_t steps = ids.size(1);
  if (static_cast<int64_t>(slots.size()) != rows ||
      static_cast<int64_t>(offsets.size()) != rows ||
      static_cast<int64_t>(new_tokens.size()) != rows) {
    return absl::InvalidArgumentError(
        "PrefillAt: need one slot, offset and token count per row");
  }
  const int64_t sink = cache.capacity() - 1;  // where padding is written
  std::vector<int64_t> where(rows * steps);
  for (int64_t n = 0; n < rows; ++n) {
    if (slots[n] < 0 || slots[n] >= cache.num_slots()) {
      return absl::InvalidArgumentError(
          absl::StrCat("PrefillAt: no slot ", slots[n]));
    }
    if (new_tokens[n] < 1 || new_tokens[n] > steps) {
      return absl::InvalidArgumentError(absl::StrCat("PrefillAt: row ", n,
                                                     " has ", new_tokens[n],
                                                     " new tokens of ", steps));
    }
    if (offsets[n] < 0 || offsets[n] + new_tokens[n] > sink) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "PrefillAt: ", new_tokens[n], " tokens at offset ", offsets[n],
          " do not fit before the last position of a slot of ",
          cache.capacity()));
    }
    for (int64_t t = 0; t < steps; ++t) {
      where[n * steps + t] = t < new_tokens[n] ? offsets[n] + t : sink;
    }
  }
  absl::StatusOr<at::Tensor> result =
      Guarded("PrefillAt", [&]() -> absl::StatusOr<at::Tensor> {
        c10::InferenceMode inference;
        const at::Device device = options_.device;
        const at::Tensor positions =
            at::arange(steps,
                       at::TensorOptions().dtype(at::kLong).device(device))
                .unsqueeze(0)
                .expand({rows, steps});
        CacheView view;
        view.cache = &cache;
        view.slots = HostToDevice(slots, at::kLong, device);
        view.slot_index = view.slots.unsqueeze(1).expand({rows, steps});
        view.positions =
            HostToDevice(where, at::kLong, device).view({rows, steps});
        view.first_slot = -1;
        view.key_length = steps;
        return RunCached(ids.to(device), positions, view, run);
      });
  if (result.ok()) {
    for (int64_t n = 0; n < rows; ++n) {
      cache.set_length(slots[n], std::max(cache.length(slots[n]),
                                          offsets[n] + new_tokens[n]));
    }
  }
  return result;
}

absl::StatusOr<at::Tensor> Decoder::Step(const at::Tensor& ids,
                                         const std::vector<int64_t>& slots,
                                         const std::vector<int64_t>& new_tokens,
                                         KvCache& cache,
                                         const RunOptions& run) const {
  if (ids.dim() != 2 || ids.scalar_type() != at::kLong) {
    return absl::InvalidArgumentError(
        "Step: ids must be a [rows, steps] int64 tensor");
  }
  const int64_t rows = ids.size(0);
  const int64_t steps = ids.size(1);
  if (static_cast<int64_t>(slots.size()) != rows ||
      static_cast<int64_t>(new_tokens.size()) != rows) {
    return absl::InvalidArgumentError(
        "Step: need one slot and one token count per row");
  }
  std::vector<int64_t> starts(rows);
  int64_t key_length = 0;
  bool fresh = true;  // every row starts an empty slot: plain causal attention
  bool consecutive = true;
  for (int64_t n = 0; n < rows; ++n) {
    if (slots[n] < 0 || slots[n] >= cache.num_slots()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Step: no slot ", slots[n]));
    }
    if (new_tokens[n] < 0 || new_tokens[n] > steps) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Step: row ", n, " has ", new_tokens[n], " new tokens of ", steps));
    }
    starts[n] = cache.length(slots[n]);
    if (starts[n] + steps > cache.capacity()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "slot ", slots[n], " holds ", starts[n], " tokens; ", steps,
          " more exceed its capacity of ", cache.capacity()));
    }
    key_length = std::max(key_length, starts[n] + steps);
    fresh = fresh && starts[n] == 0;
    consecutive = consecutive && slots[n] == slots[0] + n;
  }
  absl::StatusOr<at::Tensor> result =
      Guarded("Step", [&]() -> absl::StatusOr<at::Tensor> {
        c10::InferenceMode inference;
        const at::Tensor on_device = ids.to(options_.device);
        const auto long_options =
            at::TensorOptions().dtype(at::kLong).device(options_.device);
        const at::Tensor start =
            HostToDevice(starts, at::kLong, options_.device);
        const at::Tensor positions =
            start.unsqueeze(1) +
            at::arange(steps, long_options).unsqueeze(0);  // [N, T]
        CacheView view;
        view.cache = &cache;
        view.slots = HostToDevice(slots, at::kLong, options_.device);
        view.slot_index = view.slots.unsqueeze(1).expand({rows, steps});
        view.positions = positions;
        view.first_slot = consecutive ? slots[0] : -1;
        view.key_length = key_length;
        if (!fresh) {
          view.hidden = (at::arange(key_length, long_options)
                             .view({1, 1, 1, key_length}) >
                         positions.view({rows, 1, steps, 1}));
        }
        return RunCached(on_device, positions, view, run);
      });
  if (result.ok()) {
    for (int64_t n = 0; n < rows; ++n)
      cache.set_length(slots[n], starts[n] + new_tokens[n]);
  }
  return result;
}

at::Tensor Decoder::Logits(const at::Tensor& hidden) const {
  return at::linear(hidden, lm_head_);
}

}  // namespace microrl::model
