#include "common/model/config.h"

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "nlohmann/json.hpp"

namespace microrl::model {
namespace {

using nlohmann::json;

// Reads config[key] as a positive integer into *out; `required` decides
// whether absence is an error.
absl::Status GetPositive(const json& config, const char* key, bool required,
                         absl::string_view source, int64_t* out) {
  if (!config.contains(key) || config[key].is_null()) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": missing \"", key, "\""));
  }
  const json& value = config[key];
  if (!value.is_number_integer() || value.get<int64_t>() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": \"", key, "\" must be a positive integer, got ",
                     value.dump()));
  }
  *out = value.get<int64_t>();
  return absl::OkStatus();
}

// eos_token_id as an int or a list of ints.
absl::StatusOr<std::vector<int64_t>> ParseEos(const json& value,
                                              absl::string_view source) {
  std::vector<int64_t> ids;
  if (value.is_null()) return ids;
  if (value.is_number_integer()) {
    ids.push_back(value.get<int64_t>());
    return ids;
  }
  if (value.is_array()) {
    for (const json& id : value) {
      if (!id.is_number_integer()) break;
      ids.push_back(id.get<int64_t>());
    }
    if (ids.size() == value.size()) return ids;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      source, ": eos_token_id must be an integer or a list of integers"));
}

// RoPE settings from either transformers 5's "rope_parameters" or the older
// "rope_theta" + "rope_scaling" keys (as on the Hub).
absl::Status ParseRope(const json& config, absl::string_view source,
                       RopeConfig* rope) {
  json scaling;
  if (config.contains("rope_parameters") &&
      config["rope_parameters"].is_object()) {
    scaling = config["rope_parameters"];
    if (scaling.contains("rope_theta"))
      rope->theta = scaling["rope_theta"].get<double>();
  } else {
    if (config.contains("rope_theta") && config["rope_theta"].is_number()) {
      rope->theta = config["rope_theta"].get<double>();
    }
    if (config.contains("rope_scaling")) scaling = config["rope_scaling"];
  }
  if (scaling.is_null()) return absl::OkStatus();
  if (!scaling.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": rope scaling is not an object"));
  }
  std::string type = "default";
  if (scaling.contains("rope_type")) {
    type = scaling["rope_type"].get<std::string>();
  } else if (scaling.contains("type")) {
    type = scaling["type"].get<std::string>();
  }
  if (type == "default") return absl::OkStatus();
  if (type != "llama3") {
    return absl::UnimplementedError(
        absl::StrCat(source, ": RoPE scaling \"", type,
                     "\" is not supported (default, llama3)"));
  }
  rope->llama3_scaling = true;
  for (const char* key : {"factor", "low_freq_factor", "high_freq_factor",
                          "original_max_position_embeddings"}) {
    if (!scaling.contains(key) || !scaling[key].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": llama3 RoPE scaling needs a numeric \"", key, "\""));
    }
  }
  rope->factor = scaling["factor"].get<double>();
  rope->low_freq_factor = scaling["low_freq_factor"].get<double>();
  rope->high_freq_factor = scaling["high_freq_factor"].get<double>();
  rope->original_max_position_embeddings =
      scaling["original_max_position_embeddings"].get<int64_t>();
  if (rope->factor <= 0 || rope->low_freq_factor <= 0 ||
      rope->high_freq_factor <= rope->low_freq_factor ||
      rope->original_max_position_embeddings <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": inconsistent llama3 RoPE scaling"));
  }
  return absl::OkStatus();
}

bool GetBool(const json& config, const char* key, bool fallback) {
  return config.contains(key) && config[key].is_boolean()
             ? config[key].get<bool>()
             : fallback;
}

}  // namespace

const char* ArchitectureName(Architecture architecture) {
  return NameOf(architecture, kArchitectureNames);
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source) {
  const json config =
      json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a JSON object"));
  }
  ModelConfig out;
  try {
    if (!config.contains("architectures") ||
        !config["architectures"].is_array() ||
        config["architectures"].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": missing \"architectures\""));
    }
    const std::string architecture =
        config["architectures"][0].get<std::string>();
    const std::optional<Architecture> known =
        ValueOf(architecture, kArchitectureNames);
    if (!known.has_value()) {
      return absl::UnimplementedError(absl::StrCat(
          source, ": architecture ", architecture, " is not supported (",
          OwnNames(kArchitectureNames, ", ", ", "), ")"));
    }
    out.architecture = *known;
    for (const auto& [key, field, required] :
         {std::tuple{"vocab_size", &out.vocab_size, true},
          std::tuple{"hidden_size", &out.hidden_size, true},
          std::tuple{"intermediate_size", &out.intermediate_size, true},
          std::tuple{"num_hidden_layers", &out.num_layers, true},
          std::tuple{"num_attention_heads", &out.num_heads, true},
          std::tuple{"num_key_value_heads", &out.num_kv_heads, false},
          std::tuple{"head_dim", &out.head_dim, false},
          std::tuple{"max_position_embeddings", &out.max_position_embeddings,
                     false}}) {
      if (absl::Status s = GetPositive(config, key, required, source, field);
          !s.ok())
        return s;
    }
    if (out.num_kv_heads == 0) out.num_kv_heads = out.num_heads;
    if (out.head_dim == 0) {
      if (out.hidden_size % out.num_heads != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": hidden_size is not a multiple of num_attention_heads"));
      }
      out.head_dim = out.hidden_size / out.num_heads;
    }
    if (out.num_heads % out.num_kv_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": num_attention_heads (", out.num_heads,
                       ") is not a multiple of num_key_value_heads (",
                       out.num_kv_heads, ")"));
    }
    if (out.head_dim % 2 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": head_dim must be even"));
    }
    if (config.contains("rms_norm_eps") && config["rms_norm_eps"].is_number()) {
      out.rms_norm_eps = config["rms_norm_eps"].get<double>();
    }
    if (config.contains("hidden_act") && config["hidden_act"] != "silu") {
      return absl::UnimplementedError(absl::StrCat(source, ": hidden_act ",
                                                   config["hidden_act"].dump(),
                                                   " is not supported (silu)"));
    }
    if (GetBool(config, "use_sliding_window", false)) {
      return absl::UnimplementedError(
          absl::StrCat(source, ": sliding-window attention is not supported"));
    }
    if (absl::Status s = ParseRope(config, source, &out.rope); !s.ok())
      return s;
    out.tie_word_embeddings = GetBool(config, "tie_word_embeddings", false);
    const bool attention_bias = GetBool(config, "attention_bias", false);
    switch (out.architecture) {
      case Architecture::kQwen2:
        out.qkv_bias = true;
        break;
      case Architecture::kQwen3:
        out.qk_norm = true;
        out.qkv_bias = out.o_bias = attention_bias;
        break;
      case Architecture::kLlama:
        out.qkv_bias = out.o_bias = attention_bias;
        out.mlp_bias = GetBool(config, "mlp_bias", false);
        break;
    }
    if (config.contains("eos_token_id")) {
      absl::StatusOr<std::vector<int64_t>> eos =
          ParseEos(config["eos_token_id"], source);
      if (!eos.ok()) return eos.status();
      out.eos_token_ids = *eos;
    }
    for (const char* key : {"dtype", "torch_dtype"}) {
      if (out.dtype.empty() && config.contains(key) &&
          config[key].is_string()) {
        out.dtype = config[key].get<std::string>();
      }
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
  return out;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<ModelConfig> config = ParseModelConfig(*text, path);
  if (!config.ok()) return config.status();
  const std::string generation_path = dir + "/generation_config.json";
  absl::StatusOr<std::string> generation = ReadFileToString(generation_path);
  if (generation.ok()) {
    const json parsed = json::parse(*generation, nullptr, false);
    if (parsed.is_object() && parsed.contains("eos_token_id")) {
      absl::StatusOr<std::vector<int64_t>> eos =
          ParseEos(parsed["eos_token_id"], generation_path);
      if (!eos.ok()) return eos.status();
      if (!eos->empty()) config->eos_token_ids = *eos;
    }
  }
  return config;
}

}  // namespace microrl::model
