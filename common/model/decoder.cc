#include "common/model/decoder.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <cmath>
#include <exception>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/model/attention.h"
#include "common/model/checkpoint.h"
#include "common/model/layer_checkpoint.h"
#include "common/model/lora_linear.h"
#include "common/model/rope.h"
#include "common/model/tensor_io.h"

namespace microrl::model {
namespace {

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

// The merged weights of `layer` when `adapter` carries them (then the forward
// runs them and no LoRA terms), else null.
const LoraAdapter::MergedLinears* MergedOf(const LoraAdapter* adapter,
                                           int64_t layer) {
  if (adapter == nullptr || adapter->merged().empty()) return nullptr;
  return &adapter->merged()[layer];
}

}  // namespace

std::pair<at::Tensor, at::Tensor> Decoder::Rotary(
    const at::Tensor& positions) const {
  return RotaryTables(positions, inv_freq_, options_.dtype);
}

at::Tensor Decoder::Attention(int64_t layer, const at::Tensor& x,
                              const at::Tensor& cos, const at::Tensor& sin,
                              const LoraAdapter* adapter,
                              const CacheView* cache,
                              const PackedLayout* packed) const {
  const LayerWeights& w = layers_[layer];
  const LoraAdapter::MergedLinears* merged = MergedOf(adapter, layer);
  if (merged != nullptr) adapter = nullptr;
  const int64_t batch = x.size(0);
  const int64_t steps = x.size(1);
  const int64_t heads = config_.num_heads;
  const int64_t kv_heads = config_.num_kv_heads;
  const int64_t head_dim = config_.head_dim;
  const std::vector<at::Tensor> qkv =
      FusedLinear(x, merged != nullptr ? merged->qkv : w.qkv, w.qkv_bias,
                  {heads * head_dim, kv_heads * head_dim, kv_heads * head_dim},
                  GroupLora(adapter, layer, LoraGroup::kQkv),
                  GroupFusedA(adapter, layer, LoraGroup::kQkv),
                  merged != nullptr ? merged->qkv_packed : w.qkv_packed);
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
  if (packed != nullptr) {
    attended = PackedAttention(q, k, v, *packed).transpose(1, 2);
  } else if (cache == nullptr || !cache->mask.defined()) {
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
          SharedPromptAttention(q, all_keys, all_values, cache->mask,
                                keys.narrow(0, shared.first_slot, hosts)
                                    .narrow(2, 0, shared.key_length),
                                values.narrow(0, shared.first_slot, hosts)
                                    .narrow(2, 0, shared.key_length),
                                cache->prompt_mask, shared, score_output_);
    } else {
      attended =
          CachedAttention(q, all_keys, all_values, cache->mask, score_output_);
    }
  }
  const at::Tensor heads_merged =
      attended.transpose(1, 2).reshape({batch, steps, heads * head_dim});
  return Linear(heads_merged, merged != nullptr ? merged->o : w.o, w.o_bias,
                FindLora(adapter, layer, LoraModule::kO),
                merged != nullptr ? merged->o_packed : w.o_packed);
}

at::Tensor Decoder::Layer(int64_t layer, const at::Tensor& hidden,
                          const at::Tensor& cos, const at::Tensor& sin,
                          const LoraAdapter* adapter, const CacheView* cache,
                          const PackedLayout* packed) const {
  const LayerWeights& w = layers_[layer];
  const at::Tensor attended =
      Attention(layer, RmsNorm(hidden, w.input_norm, config_.rms_norm_eps), cos,
                sin, adapter, cache, packed);
  const at::Tensor h = hidden + attended;
  const at::Tensor x = RmsNorm(h, w.post_norm, config_.rms_norm_eps);
  const LoraAdapter::MergedLinears* merged = MergedOf(adapter, layer);
  if (merged != nullptr) adapter = nullptr;
  const std::vector<at::Tensor> gate_up = FusedLinear(
      x, merged != nullptr ? merged->gate_up : w.gate_up, w.gate_up_bias,
      {config_.intermediate_size, config_.intermediate_size},
      GroupLora(adapter, layer, LoraGroup::kGateUp),
      GroupFusedA(adapter, layer, LoraGroup::kGateUp),
      merged != nullptr ? merged->gate_up_packed : w.gate_up_packed,
      /*whole=*/false);
  return h + Linear(at::silu(gate_up[0]) * gate_up[1],
                    merged != nullptr ? merged->down : w.down, w.down_bias,
                    FindLora(adapter, layer, LoraModule::kDown),
                    merged != nullptr ? merged->down_packed : w.down_packed);
}

at::Tensor Decoder::LayerForward(int64_t layer, const at::Tensor& hidden,
                                 const at::Tensor& cos, const at::Tensor& sin,
                                 const LoraAdapter* adapter,
                                 const PackedLayout* packed) const {
  return Layer(layer, hidden, cos, sin, adapter, nullptr, packed);
}

absl::Status Decoder::CheckIds(const at::Tensor& ids, const char* caller,
                               const char* dims) {
  if (ids.dim() == 2 && ids.scalar_type() == at::kLong) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(caller, ": ids must be a [", dims, "] int64 tensor"));
}

absl::StatusOr<at::Tensor> Decoder::Forward(const at::Tensor& ids,
                                            const RunOptions& run) const {
  if (absl::Status ok = CheckIds(ids, "Forward", "batch, steps"); !ok.ok()) {
    return ok;
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
        hidden = CheckpointedLayer(*this, layer, hidden, cos, sin, run.adapter);
      } else {
        hidden = Layer(layer, hidden, cos, sin, run.adapter, nullptr);
      }
    }
    return RmsNorm(hidden, final_norm_, config_.rms_norm_eps);
  });
}

absl::StatusOr<at::Tensor> Decoder::ForwardPacked(const at::Tensor& ids,
                                                  const PackedLayout& layout,
                                                  const RunOptions& run) const {
  if (ids.dim() != 1 || ids.scalar_type() != at::kLong ||
      ids.size(0) != layout.tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("ForwardPacked: ids must be a [", layout.tokens,
                     "] int64 tensor, as the layout says"));
  }
  return Guarded("ForwardPacked", [&]() -> absl::StatusOr<at::Tensor> {
    const auto [cos, sin] = Rotary(layout.positions);
    at::Tensor hidden =
        at::embedding(embed_, ids.to(options_.device)).unsqueeze(0);
    for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
      if (run.gradient_checkpointing && at::GradMode::is_enabled()) {
        hidden = CheckpointedLayer(*this, layer, hidden, cos, sin, run.adapter,
                                   &layout);
      } else {
        hidden = Layer(layer, hidden, cos, sin, run.adapter, nullptr, &layout);
      }
    }
    return RmsNorm(hidden, final_norm_, config_.rms_norm_eps)[0];
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
  view.mask = at::arange(key_length, long_options).view({1, 1, 1, key_length}) >
              position.view({rows, 1, 1, 1});
  if (shared != nullptr) {
    view.shared = shared;
    const at::Tensor prompt_positions =
        at::arange(shared->key_length, long_options);
    view.prompt_mask =
        (prompt_positions < shared->starts.unsqueeze(-1))
            .logical_or_(prompt_positions >= shared->ends.unsqueeze(-1));
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
  if (absl::Status ok = CheckIds(ids, "PrefillAt"); !ok.ok()) return ok;
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

at::Tensor Decoder::Logits(const at::Tensor& hidden) const {
  return BaseLinear(hidden, lm_head_, at::Tensor(), lm_head_packed_);
}

}  // namespace microrl::model
