#ifndef MICRORL_COMMON_MODEL_LORA_H_
#define MICRORL_COMMON_MODEL_LORA_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/base/enum_names.h"
#include "common/model/config.h"
#include "common/safetensors/safetensors.h"

namespace microrl::model {

// The linear layers LoRA can adapt, in each decoder layer.
enum class LoraModule { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumLoraModules = 7;
// The Hugging Face module names, then the short ones ("q", ...) as aliases.
inline constexpr EnumName<LoraModule> kLoraModuleNames[] = {
    {LoraModule::kQ, "q_proj"},       {LoraModule::kK, "k_proj"},
    {LoraModule::kV, "v_proj"},       {LoraModule::kO, "o_proj"},
    {LoraModule::kGate, "gate_proj"}, {LoraModule::kUp, "up_proj"},
    {LoraModule::kDown, "down_proj"}, {LoraModule::kQ, "q"},
    {LoraModule::kK, "k"},            {LoraModule::kV, "v"},
    {LoraModule::kO, "o"},            {LoraModule::kGate, "gate"},
    {LoraModule::kUp, "up"},          {LoraModule::kDown, "down"}};

// Linear layers that read the same input, so that the decoder computes them as
// one matmul over their concatenated weights: q/k/v (attention's input) and
// gate/up (the MLP's).
enum class LoraGroup { kQkv, kGateUp };
inline constexpr int kNumLoraGroups = 2;
// The group's modules, in the order of their concatenated weights.
std::vector<LoraModule> LoraGroupModules(LoraGroup group);

// "q_proj", "k_proj", ..., the Hugging Face module names.
const char* LoraModuleName(LoraModule module);
// Accepts "q_proj" (or the short "q"), ...; InvalidArgument otherwise.
absl::StatusOr<LoraModule> ParseLoraModule(absl::string_view name);

struct LoraConfig {
  int64_t rank = 8;
  double alpha = 16.0;
  std::vector<LoraModule> targets = {
      LoraModule::kQ,    LoraModule::kK,  LoraModule::kV,   LoraModule::kO,
      LoraModule::kGate, LoraModule::kUp, LoraModule::kDown};
  // rsLoRA: scale alpha / sqrt(rank) instead of alpha / rank.
  bool use_rslora = false;

  double Scale() const;
};

// One adapted linear layer: y = W x (+ b) + scale * B (A x).
struct LoraLinear {
  at::Tensor a;  // [rank, in_features], float32
  at::Tensor b;  // [out_features, rank], float32
  double scale = 1.0;
};

// LoRA weights for every adapted linear layer of a decoder. Not thread-safe to
// mutate; concurrent reads (forward passes) are fine. Weights are float32 on
// the adapter's device (the learner's master weights) unless loaded in another
// dtype (the rollout server keeps them in the base model's dtype); the forward
// pass computes LoRA in the activations' dtype either way.
class LoraAdapter {
 public:
  // A fresh adapter for `model`: A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's
  // Kaiming-uniform with a = sqrt(5)), B = 0, so it starts as a no-op; the
  // weights require grad. `seed` makes A reproducible.
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> Create(
      const ModelConfig& model, const LoraConfig& config, at::Device device,
      uint64_t seed);

  // Loads a PEFT adapter directory (adapter_config.json +
  // adapter_model.safetensors) made for a model of shape `model`.
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> LoadPeft(
      const std::string& dir, const ModelConfig& model, at::Device device,
      at::ScalarType dtype = at::kFloat);

  // The same from the two files' contents (e.g. received over gRPC). Checks
  // ranks, target modules, shapes against `model`, and that values are finite.
  // The weights are kept on `device` in `dtype`.
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> FromPeft(
      absl::string_view config_json,
      std::shared_ptr<safetensors::SafetensorsFile> weights,
      const ModelConfig& model, at::Device device,
      at::ScalarType dtype = at::kFloat);

  // The same from tensors by PEFT name (any device and floating dtype; `label`
  // names their source in errors). copy: the adapter gets its own copies even
  // where the tensors are already on `device` in `dtype` (e.g. another
  // process's memory, opened through CUDA IPC).
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> FromTensors(
      absl::string_view config_json,
      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
      const std::string& label, const ModelConfig& model, at::Device device,
      at::ScalarType dtype, bool copy);

  // Writes adapter_config.json and adapter_model.safetensors into `dir` (made
  // if missing), loadable by PEFT's PeftModel.from_pretrained and vLLM.
  absl::Status SavePeft(const std::string& dir,
                        const std::string& base_model) const;
  // The two files' contents.
  std::string PeftConfigJson(const std::string& base_model) const;
  // The weights are written in `dtype` (float32: exactly; bfloat16: half the
  // bytes, what a rollout server in bfloat16 keeps anyway).
  absl::StatusOr<std::string> PeftSafetensors(
      at::ScalarType dtype = at::kFloat) const;

  // The adapted layer, or nullptr if `module` of `layer` is not adapted.
  const LoraLinear* Find(int64_t layer, LoraModule module) const;
  LoraLinear* Find(int64_t layer, LoraModule module);

  // Every A and B, in a fixed order (layer, module, A then B).
  std::vector<at::Tensor> Parameters() const;
  int64_t NumParameters() const;
  const LoraConfig& config() const { return config_; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

  // Sets requires_grad on every weight.
  void SetRequiresGrad(bool requires_grad);

  // For adapters that only serve (the rollout server's): stores the A of each
  // group's adapted modules (q/k/v, gate/up) of a layer in one tensor, the
  // modules' A becoming views of it, so that a forward pass without autograd
  // computes them in one matmul (FusedA). Values and outputs do not change;
  // writing into a module's A (copy_) writes into the fused tensor. Does
  // nothing if a weight requires grad (the learner concatenates per forward
  // instead, inside autograd). Replacing a module's `a` afterwards leaves the
  // fused tensor stale: copy into it instead.
  void FuseInputProjections();
  // The fused A of `group` in `layer` (rows: its adapted modules' A in the
  // group's order), or an undefined tensor if that group is not fused.
  const at::Tensor& FusedA(int64_t layer, LoraGroup group) const;

  // A layer's linear weights with this adapter added in (W + scale B A, in
  // the base weights' layout and dtype), made by Decoder::MergeAdapter for
  // decoding without the LoRA terms. The decoder runs them instead of base +
  // LoRA whenever they are set. Computed once: writing into A or B afterwards
  // leaves them stale (only the rollout server on the CPU merges, and it
  // never writes into a loaded adapter).
  struct MergedLinears {
    at::Tensor qkv, o, gate_up, down;
    // Their PackWeight when the decoder packs its weights (else undefined).
    at::Tensor qkv_packed, o_packed, gate_up_packed, down_packed;
  };
  const std::vector<MergedLinears>& merged() const { return merged_; }
  void SetMerged(std::vector<MergedLinears> merged) {
    merged_ = std::move(merged);
  }
  // Bytes of the merged tensors and their packed forms (0 when not merged); a
  // group with no adapted module holds the base's own tensors, not copies, and
  // counts too.
  int64_t MergedBytes() const;

 private:
  LoraAdapter() = default;

  LoraConfig config_;
  std::vector<std::array<at::Tensor, kNumLoraGroups>> fused_a_;
  std::vector<std::array<std::optional<LoraLinear>, kNumLoraModules>> layers_;
  std::vector<MergedLinears> merged_;
};

// "base_model.model.model.layers.<layer>.<self_attn|mlp>.<module>.lora_<A|B>.weight"
std::string PeftTensorName(int64_t layer, LoraModule module, bool is_a);

// Input and output features of `module` in a decoder of shape `model`.
std::pair<int64_t, int64_t> LoraModuleShape(const ModelConfig& model,
                                            LoraModule module);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_LORA_H_
