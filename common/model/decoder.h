#ifndef MICRORL_COMMON_MODEL_DECODER_H_
#define MICRORL_COMMON_MODEL_DECODER_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/attention.h"
#include "common/model/config.h"
#include "common/model/kv_cache.h"
#include "common/model/lora.h"
#include "common/model/lora_linear.h"
#include "common/model/packing.h"

namespace microrl::testing {
class DecoderTestPeer;
}  // namespace microrl::testing

namespace microrl::model {

struct DecoderOptions {
  at::Device device = at::kCPU;
  // Dtype of the base weights and activations: float32 on the CPU, bfloat16 on
  // CUDA. LoRA's matmuls run in this dtype too, whatever the adapter's.
  at::ScalarType dtype = at::kFloat;
};

struct RunOptions {
  // LoRA to apply at each adapted matmul; nullptr runs the base model alone
  // (the reference policy, with no copy of any weight).
  const LoraAdapter* adapter = nullptr;
  // Forward only: keep each layer's input instead of its activations and
  // recompute the layer during backward.
  bool gradient_checkpointing = false;
};

// A Qwen2 / Qwen3 / Llama decoder-only transformer over Hugging Face weights.
// The weights are plain tensors named as in the checkpoint (no nn::Module: the
// same frozen tensors serve every forward, with or without LoRA, and on the CPU
// they view the memory-mapped checkpoint directly). Immutable after Load, so
// concurrent forward passes are safe; a KvCache passed to PrefillAt or
// DecodeOnDevice is not.
class Decoder {
 public:
  // Loads config.json and the safetensors weights of a model directory onto
  // options.device in options.dtype. Errors name the missing or mis-shaped
  // tensor.
  static absl::StatusOr<std::unique_ptr<Decoder>> Load(
      const std::string& dir, const DecoderOptions& options);
  // The same from tensors by checkpoint name (any device or dtype).
  static absl::StatusOr<std::unique_ptr<Decoder>> FromTensors(
      const ModelConfig& config,
      const std::map<std::string, at::Tensor>& tensors,
      const DecoderOptions& options);

  const ModelConfig& config() const { return config_; }
  const DecoderOptions& options() const { return options_; }

  // Scoring and training. ids: [B, T] int64; every row is a sequence starting
  // at position 0, right-padded (outputs at padded positions are meaningless).
  // Returns the final hidden states (after the last norm), [B, T, hidden].
  // Differentiable with respect to the adapter's weights.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& ids,
                                     const RunOptions& run) const;

  // The same for a packed row (packing.h): ids [N] int64 laid out as `layout`
  // says. Returns the final hidden states [N, hidden]; no compute goes to
  // padding outside attention.
  absl::StatusOr<at::Tensor> ForwardPacked(const at::Tensor& ids,
                                           const PackedLayout& layout,
                                           const RunOptions& run) const;

  // Generation, as the rollout server runs it: PrefillAt, then DecodeOnDevice
  // per token.
  //
  // Prefill of prompts as sequences of their own written into slots at given
  // offsets (several prompts may share a slot at disjoint offsets): row n's
  // first new_tokens[n] ids take positions 0.. (RoPE), attend causally to
  // each other only, and their keys and values go to [offsets[n],
  // offsets[n] + new_tokens[n]) of slot slots[n]; padding goes to the slot's
  // last position, which must hold no prompt. Each slot's length becomes at
  // least the end of what it now holds. Returns [N, T, hidden].
  absl::StatusOr<at::Tensor> PrefillAt(const at::Tensor& ids,
                                       const std::vector<int64_t>& slots,
                                       const std::vector<int64_t>& offsets,
                                       const std::vector<int64_t>& new_tokens,
                                       KvCache& cache,
                                       const RunOptions& run) const;

  // One decode step of rows 0..N-1 in slots first_slot..first_slot+N-1, with
  // everything already on the device: ids [N, 1] int64, positions [N] int64
  // (each row's new token goes there in its slot: the slot's length). Attends
  // over key positions [0, key_length), masking those beyond each row's
  // position, so key_length may be any bound >= every position + 1 (a bucket,
  // so that the shapes repeat) up to the cache's capacity. No host work and
  // no synchronization: the step can be captured in a CUDA graph. Does not
  // advance the cache's lengths (the caller does). Returns [N, 1, hidden].
  // rotary_offsets [N] (if defined) is added to positions for RoPE: the
  // length of a row's prompt held elsewhere, in `shared`'s prompt slots, which
  // the rows then attend to first.
  at::Tensor DecodeOnDevice(const at::Tensor& ids, const at::Tensor& positions,
                            int64_t first_slot, int64_t key_length,
                            KvCache& cache, const RunOptions& run,
                            const at::Tensor& rotary_offsets = at::Tensor(),
                            const SharedPrompts* shared = nullptr) const;

  // Logits [..., vocab] of hidden states [..., hidden], in the model dtype. For
  // a few positions at a time (sampling, tests); per-token log-probs of whole
  // sequences go through ComputeTokenStats, chunked.
  at::Tensor Logits(const at::Tensor& hidden) const;

  // Adds `adapter` into a copy of this model's linear weights
  // (LoraAdapter::MergedLinears): forward passes with it then run the merged
  // weights and no LoRA terms. Equal to base + LoRA up to rounding (float32:
  // within 1e-5 in tests); costs a copy of every linear weight an adapted
  // module touches (the others are shared). For serving only: refused
  // (FailedPrecondition) for an adapter whose weights require grad. In
  // bfloat16 or float16 the sum is rounded to the base's precision, which
  // drops small updates: the rollout server merges float32 models only.
  absl::Status MergeAdapter(LoraAdapter& adapter) const;
  // Whether serving merges adapters here: float32 on the CPU. (In half
  // precision the sum would drop small updates; on CUDA the LoRA terms cost
  // little.) The rollout server's one rule for --merge_adapter.
  bool MergesAdaptersForServing() const {
    return !options_.device.is_cuda() && options_.dtype == at::kFloat;
  }

  // Keeps MKL's packed form (PackWeight) of every linear weight and of the
  // output projection, which products of few rows without autograd then read:
  // the CPU decode's linear layers. MergeAdapter packs the merged weights as
  // well. Weights under `min_elements` stay unpacked (PackWeight). Returns
  // the bytes the packed copies hold; 0, and nothing changes, where packing is
  // unavailable (not float32 on the CPU, no MKL: packs_weights() stays
  // false). Call before sharing the decoder.
  absl::StatusOr<int64_t> PackWeights(int64_t min_elements = kPackMinElements);
  bool packs_weights() const { return packs_weights_; }

  // The output projection, [vocab, hidden] (the embedding when tied).
  const at::Tensor& lm_head() const { return lm_head_; }

  // One decoder layer (used by gradient checkpointing to recompute it):
  // hidden [B, T, H] at positions with rotary tables cos/sin [B, T, head_dim];
  // with `packed`, B = 1 and attention follows the layout.
  at::Tensor LayerForward(int64_t layer, const at::Tensor& hidden,
                          const at::Tensor& cos, const at::Tensor& sin,
                          const LoraAdapter* adapter,
                          const PackedLayout* packed = nullptr) const;

 private:
  friend class testing::DecoderTestPeer;  // tests' reference cached forward

  // OK when `ids` is a [rows, steps] int64 tensor; else InvalidArgument naming
  // `caller` and the dimensions as `dims` ("batch, steps").
  static absl::Status CheckIds(const at::Tensor& ids, const char* caller,
                               const char* dims = "rows, steps");

  struct LayerWeights {
    at::Tensor input_norm, post_norm;
    at::Tensor q, k, v, o;                      // [out, in]
    at::Tensor q_bias, k_bias, v_bias, o_bias;  // undefined when absent
    at::Tensor q_norm, k_norm;                  // [head_dim] (Qwen3)
    at::Tensor gate, up, down;
    at::Tensor gate_bias, up_bias, down_bias;
    // q, k, v and gate, up concatenated (one matmul each; the separate
    // weights and biases above are views of these).
    at::Tensor qkv, qkv_bias, gate_up, gate_up_bias;
    at::Tensor qk_norm;  // [heads + kv_heads, head_dim]: q_norm, k_norm
    // PackWeight of qkv, o, gate_up and down (PackWeights; else undefined).
    at::Tensor qkv_packed, o_packed, gate_up_packed, down_packed;
  };
  // Keys and values a layer's attention reads besides the new tokens' own.
  struct CacheView {
    KvCache* cache;
    at::Tensor slot_index;  // [N, T] int64: slot of each new token
    at::Tensor positions;   // [N, T] int64: position of each new token
    at::Tensor slots;       // [N] int64
    int64_t first_slot;     // >= 0 if slots are first_slot, first_slot + 1, ...
    int64_t key_length;  // positions to attend over: max over rows of start + T
    at::Tensor mask;     // [N, 1, T, key_length] bool, true: not attended;
                         // undefined: causal over the new tokens alone
    // Decode only: prompts in prompt slots read first, and which prompt keys
    // each entry does not read ([slots, width, shared->key_length] bool).
    const SharedPrompts* shared = nullptr;
    at::Tensor prompt_mask;
  };

  Decoder() = default;

  // cos, sin [B, T, head_dim] in the model dtype for positions [B, T].
  std::pair<at::Tensor, at::Tensor> Rotary(const at::Tensor& positions) const;
  at::Tensor Attention(int64_t layer, const at::Tensor& x,
                       const at::Tensor& cos, const at::Tensor& sin,
                       const LoraAdapter* adapter, const CacheView* cache,
                       const PackedLayout* packed = nullptr) const;
  // The layers over ids already on the device, with the KV cache of `view`,
  // at RoPE positions rotary_positions: the final hidden states.
  at::Tensor RunCached(const at::Tensor& ids,
                       const at::Tensor& rotary_positions,
                       const CacheView& view, const RunOptions& run) const;
  at::Tensor Layer(int64_t layer, const at::Tensor& hidden,
                   const at::Tensor& cos, const at::Tensor& sin,
                   const LoraAdapter* adapter, const CacheView* cache,
                   const PackedLayout* packed = nullptr) const;

  ModelConfig config_;
  DecoderOptions options_;
  at::Tensor embed_;  // [vocab, hidden]
  at::Tensor final_norm_;
  at::Tensor lm_head_;   // [vocab, hidden]
  at::Tensor lm_head_packed_;  // PackWeight of lm_head_ (PackWeights)
  bool packs_weights_ = false;
  int64_t pack_min_elements_ = 0;
  at::Tensor inv_freq_;  // [head_dim / 2], float32
  // How attention scores of half-precision activations are written.
  ScoreOutput score_output_ = ScoreOutput::kFloat32;
  std::vector<LayerWeights> layers_;
};

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_DECODER_H_
