#ifndef MICRORL_COMMON_MODEL_CONFIG_H_
#define MICRORL_COMMON_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/base/enum_names.h"

namespace microrl::model {

enum class Architecture {
  kQwen2,  // Qwen2ForCausalLM: q/k/v projections with bias
  kQwen3,  // Qwen3ForCausalLM: RMSNorm on q and k per head
  kLlama,  // LlamaForCausalLM (Llama 3.x, optionally llama3 RoPE scaling)
};
inline constexpr EnumName<Architecture> kArchitectureNames[] = {
    {Architecture::kQwen2, "Qwen2ForCausalLM"},
    {Architecture::kQwen3, "Qwen3ForCausalLM"},
    {Architecture::kLlama, "LlamaForCausalLM"}};

// "Qwen2ForCausalLM", ...
const char* ArchitectureName(Architecture architecture);

// RoPE frequencies: the default inverse frequencies, optionally rescaled the
// Llama 3 way.
struct RopeConfig {
  double theta = 10000.0;
  bool llama3_scaling = false;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// The decoder's shape, from a Hugging Face config.json. Plain data.
struct ModelConfig {
  Architecture architecture = Architecture::kQwen2;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // bias on q_proj, k_proj, v_proj
  bool o_bias = false;    // bias on o_proj
  bool mlp_bias = false;  // bias on gate_proj, up_proj, down_proj
  bool qk_norm = false;   // q_norm / k_norm (Qwen3)
  // Token ids that end generation (config.json's eos_token_id, which may be a
  // list; generation_config.json's, when LoadModelConfig finds one, instead).
  std::vector<int64_t> eos_token_ids;
  // The checkpoint's dtype as config.json names it ("bfloat16", ...), or "".
  std::string dtype;
};

// Parses config.json text. `source` names it in errors. InvalidArgument for
// malformed JSON, missing or inconsistent sizes, and Unimplemented for an
// architecture or feature microrl does not support (other architectures, a
// sliding window, RoPE scaling other than llama3, activations other than silu).
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source);

// Reads <dir>/config.json, and <dir>/generation_config.json's eos_token_id if
// that file exists.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_CONFIG_H_
