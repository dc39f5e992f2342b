#include "common/model/lora.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <sys/stat.h>

#include <cmath>
#include <regex>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/file.h"
#include "common/model/tensor_io.h"
#include "nlohmann/json.hpp"

namespace microrl::model {
namespace {

using nlohmann::json;

constexpr LoraModule kAllModules[] = {
    LoraModule::kQ,    LoraModule::kK,  LoraModule::kV,   LoraModule::kO,
    LoraModule::kGate, LoraModule::kUp, LoraModule::kDown};

bool IsAttention(LoraModule module) {
  return module == LoraModule::kQ || module == LoraModule::kK ||
         module == LoraModule::kV || module == LoraModule::kO;
}

// "model.layers.3.self_attn.q_proj": PEFT's module key, used by rank_pattern
// and alpha_pattern.
std::string ModuleKey(int64_t layer, LoraModule module) {
  return absl::StrCat("model.layers.", layer, ".",
                      IsAttention(module) ? "self_attn" : "mlp", ".",
                      LoraModuleName(module));
}

// PEFT's pattern lookup: the first key k of `patterns` such that the module key
// matches "(.*\.)?k$".
std::optional<double> PatternValue(const json& patterns,
                                   const std::string& module_key) {
  if (!patterns.is_object()) return std::nullopt;
  for (const auto& [key, value] : patterns.items()) {
    if (!value.is_number()) continue;
    try {
      if (std::regex_match(module_key, std::regex("(.*\\.)?(" + key + ")"))) {
        return value.get<double>();
      }
    } catch (const std::regex_error&) {
      if (module_key == key) return value.get<double>();
    }
  }
  return std::nullopt;
}

double ScaleFor(double alpha, int64_t rank, bool use_rslora) {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(rank))
                    : alpha / static_cast<double>(rank);
}

double AlphaFor(double scale, int64_t rank, bool use_rslora) {
  return use_rslora ? scale * std::sqrt(static_cast<double>(rank))
                    : scale * static_cast<double>(rank);
}

}  // namespace

const char* LoraModuleName(LoraModule module) {
  return NameOf(module, kLoraModuleNames);
}

absl::StatusOr<LoraModule> ParseLoraModule(absl::string_view name) {
  const std::optional<LoraModule> module = ValueOf(name, kLoraModuleNames);
  if (module.has_value()) return *module;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown LoRA target \"", name, "\" (",
                   OwnNames(kLoraModuleNames, ", ", ", "), ")"));
}

double LoraConfig::Scale() const { return ScaleFor(alpha, rank, use_rslora); }

std::string PeftTensorName(int64_t layer, LoraModule module, bool is_a) {
  return absl::StrCat("base_model.model.", ModuleKey(layer, module), ".lora_",
                      is_a ? "A" : "B", ".weight");
}

std::pair<int64_t, int64_t> LoraModuleShape(const ModelConfig& model,
                                            LoraModule module) {
  const int64_t q_out = model.num_heads * model.head_dim;
  const int64_t kv_out = model.num_kv_heads * model.head_dim;
  switch (module) {
    case LoraModule::kQ:
      return {model.hidden_size, q_out};
    case LoraModule::kK:
      return {model.hidden_size, kv_out};
    case LoraModule::kV:
      return {model.hidden_size, kv_out};
    case LoraModule::kO:
      return {q_out, model.hidden_size};
    case LoraModule::kGate:
      return {model.hidden_size, model.intermediate_size};
    case LoraModule::kUp:
      return {model.hidden_size, model.intermediate_size};
    case LoraModule::kDown:
      return {model.intermediate_size, model.hidden_size};
  }
  return {0, 0};
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::Create(
    const ModelConfig& model, const LoraConfig& config, at::Device device,
    uint64_t seed) {
  if (config.rank <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoRA rank must be positive, got ", config.rank));
  }
  if (!(config.alpha > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoRA alpha must be positive, got ", config.alpha));
  }
  if (config.targets.empty())
    return absl::InvalidArgumentError("LoRA needs at least one target");
  std::unique_ptr<LoraAdapter> adapter(new LoraAdapter);
  adapter->config_ = config;
  adapter->layers_.resize(model.num_layers);
  at::Generator generator = at::detail::createCPUGenerator(seed);
  const double scale = config.Scale();
  for (int64_t layer = 0; layer < model.num_layers; ++layer) {
    for (LoraModule module : config.targets) {
      const auto [in, out] = LoraModuleShape(model, module);
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      at::Tensor a = at::empty({config.rank, in}, at::kFloat)
                         .uniform_(-bound, bound, generator);
      at::Tensor b = at::zeros({out, config.rank}, at::kFloat);
      adapter->layers_[layer][static_cast<int>(module)] =
          LoraLinear{a.to(device).requires_grad_(true),
                     b.to(device).requires_grad_(true), scale};
    }
  }
  return adapter;
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::LoadPeft(
    const std::string& dir, const ModelConfig& model, at::Device device,
    at::ScalarType dtype) {
  absl::StatusOr<std::string> config =
      ReadFileToString(dir + "/adapter_config.json");
  if (!config.ok()) return config.status();
  absl::StatusOr<std::shared_ptr<safetensors::SafetensorsFile>> weights =
      safetensors::SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  if (!weights.ok()) return weights.status();
  return FromPeft(*config, *weights, model, device, dtype);
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::FromPeft(
    absl::string_view config_json,
    std::shared_ptr<safetensors::SafetensorsFile> weights,
    const ModelConfig& model, at::Device device, at::ScalarType dtype) {
  NamedTensors tensors;
  for (const safetensors::TensorInfo& info : weights->tensors()) {
    absl::StatusOr<at::Tensor> tensor = TensorFromFile(weights, info);
    if (!tensor.ok()) return tensor.status();
    tensors.emplace_back(info.name, *std::move(tensor));
  }
  return FromTensors(config_json, tensors, weights->label(), model, device,
                     dtype, /*copy=*/false);
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::FromTensors(
    absl::string_view config_json,
    const std::vector<std::pair<std::string, at::Tensor>>& tensors,
    const std::string& label, const ModelConfig& model, at::Device device,
    at::ScalarType dtype, bool copy) {
  const json config =
      json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  auto invalid = [](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("bad PEFT adapter: ", why));
  };
  if (config.is_discarded() || !config.is_object()) {
    return invalid("adapter_config.json is not a JSON object");
  }
  std::unique_ptr<LoraAdapter> adapter(new LoraAdapter);
  json rank_pattern, alpha_pattern;
  try {
    if (config.value("peft_type", "LORA") != "LORA") {
      return absl::UnimplementedError(absl::StrCat("PEFT type ",
                                                   config["peft_type"].dump(),
                                                   " is not supported (LORA)"));
    }
    if (config.value("use_dora", false))
      return absl::UnimplementedError("DoRA is not supported");
    if (config.value("fan_in_fan_out", false)) {
      return absl::UnimplementedError(
          "fan_in_fan_out adapters are not supported");
    }
    if (config.contains("bias") && config["bias"] != "none") {
      return absl::UnimplementedError(
          "LoRA bias training (bias != \"none\") is not supported");
    }
    for (const char* key : {"modules_to_save", "layer_replication",
                            "trainable_token_indices", "target_parameters"}) {
      if (config.contains(key) && !config[key].is_null() &&
          !config[key].empty()) {
        return absl::UnimplementedError(
            absl::StrCat("PEFT's ", key, " is not supported"));
      }
    }
    for (const char* key : {"lora_bias", "use_qalora"}) {
      if (config.value(key, false)) {
        return absl::UnimplementedError(
            absl::StrCat("PEFT's ", key, " is not supported"));
      }
    }
    if (!config.contains("r") || !config["r"].is_number_integer() ||
        config["r"].get<int64_t>() <= 0) {
      return invalid("\"r\" must be a positive integer");
    }
    adapter->config_.rank = config["r"].get<int64_t>();
    adapter->config_.alpha =
        config.contains("lora_alpha") && config["lora_alpha"].is_number()
            ? config["lora_alpha"].get<double>()
            : 8.0;  // PEFT's default
    adapter->config_.use_rslora = config.value("use_rslora", false);
    if (config.contains("rank_pattern")) rank_pattern = config["rank_pattern"];
    if (config.contains("alpha_pattern"))
      alpha_pattern = config["alpha_pattern"];
  } catch (const json::exception& e) {
    return invalid(e.what());
  }

  adapter->layers_.resize(model.num_layers);
  static const std::regex kName(
      R"(base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_(A|B)(\.default)?\.weight)");
  std::map<std::pair<int64_t, int>, std::pair<at::Tensor, at::Tensor>> pairs;
  for (const auto& [name, tensor] : tensors) {
    std::smatch match;
    if (!std::regex_match(name, match, kName)) {
      return absl::UnimplementedError(absl::StrCat(
          label, ": tensor \"", name,
          "\" is not a LoRA A/B weight of a decoder layer's linear layer"));
    }
    int64_t layer = 0;
    if (!absl::SimpleAtoi(match[1].str(), &layer) ||
        layer >= model.num_layers) {
      return invalid(absl::StrCat("tensor \"", name, "\": the model has ",
                                  model.num_layers, " layers"));
    }
    absl::StatusOr<LoraModule> module = ParseLoraModule(match[3].str());
    if (!module.ok() || IsAttention(*module) != (match[2] == "self_attn")) {
      return absl::UnimplementedError(
          absl::StrCat("tensor \"", name, "\": module ", match[3].str(),
                       " is not supported"));
    }
    if (!at::isFloatingType(tensor.scalar_type())) {
      return invalid(
          absl::StrCat("tensor \"", name, "\" is not floating point"));
    }
    auto& pair = pairs[{layer, static_cast<int>(*module)}];
    (match[4] == "A" ? pair.first : pair.second) = tensor;
  }
  if (pairs.empty())
    return invalid("adapter_model.safetensors holds no LoRA weights");

  std::set<LoraModule> targets;
  for (const auto& [key, pair] : pairs) {
    const auto [layer, index] = key;
    const LoraModule module = static_cast<LoraModule>(index);
    const std::string where = ModuleKey(layer, module);
    if (!pair.first.defined() || !pair.second.defined()) {
      return invalid(absl::StrCat(where, ": needs both lora_A and lora_B"));
    }
    const auto [in, out] = LoraModuleShape(model, module);
    const at::Tensor& a = pair.first;
    const at::Tensor& b = pair.second;
    if (a.dim() != 2 || b.dim() != 2 || a.size(1) != in || b.size(0) != out ||
        b.size(1) != a.size(0) || a.size(0) <= 0) {
      return invalid(
          absl::StrCat(where, ": lora_A ", c10::str(a.sizes()), " and lora_B ",
                       c10::str(b.sizes()), " do not fit a ", in, " -> ", out,
                       " layer (want [r, ", in, "] and [", out, ", r])"));
    }
    const int64_t rank = a.size(0);
    const int64_t expected_rank = static_cast<int64_t>(
        PatternValue(rank_pattern, where).value_or(adapter->config_.rank));
    if (rank != expected_rank) {
      return invalid(absl::StrCat(where, ": rank ", rank,
                                  " but the config says ", expected_rank));
    }
    const double alpha =
        PatternValue(alpha_pattern, where).value_or(adapter->config_.alpha);
    // Checked for non-finite values on the device, all at once below.
    adapter->layers_[layer][index] = LoraLinear{
        a.to(device, dtype, /*non_blocking=*/false, copy).contiguous(),
        b.to(device, dtype, /*non_blocking=*/false, copy).contiguous(),
        ScaleFor(alpha, rank, adapter->config_.use_rslora)};
    targets.insert(module);
  }
  // Each weight's minimum and maximum (one pass, no temporary; NaN
  // propagates), read back once for all: finite iff both are.
  std::vector<at::Tensor> finite;
  std::vector<std::string> names;
  auto finite_flag = [](const at::Tensor& t) {
    const auto [low, high] = at::aminmax(t);
    return at::isfinite(at::stack({low, high})).all();
  };
  for (const auto& [key, pair] : pairs) {
    const LoraLinear& linear = *adapter->layers_[key.first][key.second];
    finite.push_back(finite_flag(linear.a));
    finite.push_back(finite_flag(linear.b));
    names.push_back(ModuleKey(key.first, static_cast<LoraModule>(key.second)));
  }
  const at::Tensor flags = at::stack(finite).cpu();
  const bool* flag = flags.data_ptr<bool>();
  for (size_t i = 0; i < names.size(); ++i) {
    if (!flag[2 * i] || !flag[2 * i + 1])
      return invalid(absl::StrCat(names[i], ": non-finite values"));
  }
  adapter->config_.targets.assign(targets.begin(), targets.end());
  return adapter;
}

std::string LoraAdapter::PeftConfigJson(const std::string& base_model) const {
  std::vector<std::string> targets;
  for (LoraModule module : config_.targets)
    targets.push_back(LoraModuleName(module));
  json rank_pattern = json::object();
  json alpha_pattern = json::object();
  for (int64_t layer = 0; layer < num_layers(); ++layer) {
    for (LoraModule module : kAllModules) {
      const LoraLinear* linear = Find(layer, module);
      if (linear == nullptr) continue;
      const int64_t rank = linear->a.size(0);
      const std::string key = ModuleKey(layer, module);
      if (rank != config_.rank) rank_pattern[key] = rank;
      const double alpha = AlphaFor(linear->scale, rank, config_.use_rslora);
      if (std::abs(alpha - config_.alpha) > 1e-9 * std::abs(config_.alpha)) {
        alpha_pattern[key] = alpha;
      }
    }
  }
  const json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", config_.rank},
      {"lora_alpha", config_.alpha},
      {"target_modules", targets},
      {"use_rslora", config_.use_rslora},
      {"lora_dropout", 0.0},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", rank_pattern},
      {"alpha_pattern", alpha_pattern},
      {"use_dora", false},
      {"inference_mode", true},
  };
  return config.dump(2);
}

absl::StatusOr<std::string> LoraAdapter::PeftSafetensors(
    at::ScalarType dtype) const {
  NamedTensors tensors;
  for (int64_t layer = 0; layer < num_layers(); ++layer) {
    for (LoraModule module : kAllModules) {
      const LoraLinear* linear = Find(layer, module);
      if (linear == nullptr) continue;
      tensors.emplace_back(PeftTensorName(layer, module, true),
                           linear->a.detach().to(dtype));
      tensors.emplace_back(PeftTensorName(layer, module, false),
                           linear->b.detach().to(dtype));
    }
  }
  return SerializeTensors(tensors, {{"format", "pt"}});
}

absl::Status LoraAdapter::SavePeft(const std::string& dir,
                                   const std::string& base_model) const {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(
        absl::StrCat("cannot create ", dir, ": ", strerror(errno)));
  }
  absl::StatusOr<std::string> weights = PeftSafetensors();
  if (!weights.ok()) return weights.status();
  if (absl::Status s =
          WriteFileAtomically(dir + "/adapter_model.safetensors", *weights);
      !s.ok()) {
    return s;
  }
  return WriteFileAtomically(dir + "/adapter_config.json",
                             PeftConfigJson(base_model) + "\n");
}

const LoraLinear* LoraAdapter::Find(int64_t layer, LoraModule module) const {
  if (layer < 0 || layer >= num_layers()) return nullptr;
  const std::optional<LoraLinear>& linear =
      layers_[layer][static_cast<int>(module)];
  return linear.has_value() ? &*linear : nullptr;
}

LoraLinear* LoraAdapter::Find(int64_t layer, LoraModule module) {
  if (layer < 0 || layer >= num_layers()) return nullptr;
  std::optional<LoraLinear>& linear = layers_[layer][static_cast<int>(module)];
  return linear.has_value() ? &*linear : nullptr;
}

std::vector<LoraModule> LoraGroupModules(LoraGroup group) {
  switch (group) {
    case LoraGroup::kQkv:
      return {LoraModule::kQ, LoraModule::kK, LoraModule::kV};
    case LoraGroup::kGateUp:
      return {LoraModule::kGate, LoraModule::kUp};
  }
  return {};
}

void LoraAdapter::FuseInputProjections() {
  for (const at::Tensor& parameter : Parameters()) {
    if (parameter.requires_grad()) return;
  }
  at::NoGradGuard no_grad;
  fused_a_.assign(layers_.size(), {});
  for (int64_t layer = 0; layer < num_layers(); ++layer) {
    for (int g = 0; g < kNumLoraGroups; ++g) {
      std::vector<LoraLinear*> adapted;
      std::vector<at::Tensor> as;
      for (LoraModule module : LoraGroupModules(static_cast<LoraGroup>(g))) {
        if (LoraLinear* linear = Find(layer, module)) {
          adapted.push_back(linear);
          as.push_back(linear->a);
        }
      }
      if (adapted.size() < 2) continue;  // nothing to gain
      const at::Tensor fused = at::cat(as);
      int64_t offset = 0;
      for (LoraLinear* linear : adapted) {
        const int64_t rank = linear->a.size(0);
        linear->a = fused.narrow(0, offset, rank);
        offset += rank;
      }
      fused_a_[layer][g] = fused;
    }
  }
}

int64_t LoraAdapter::MergedBytes() const {
  int64_t bytes = 0;
  for (const MergedLinears& layer : merged_) {
    for (const at::Tensor* t :
         {&layer.qkv, &layer.o, &layer.gate_up, &layer.down, &layer.qkv_packed,
          &layer.o_packed, &layer.gate_up_packed, &layer.down_packed}) {
      if (t->defined()) {
        bytes += t->numel() * static_cast<int64_t>(t->element_size());
      }
    }
  }
  return bytes;
}

const at::Tensor& LoraAdapter::FusedA(int64_t layer, LoraGroup group) const {
  static const at::Tensor* const kNone = new at::Tensor();
  if (layer < 0 || layer >= static_cast<int64_t>(fused_a_.size())) {
    return *kNone;
  }
  return fused_a_[layer][static_cast<int>(group)];
}

std::vector<at::Tensor> LoraAdapter::Parameters() const {
  std::vector<at::Tensor> parameters;
  for (const auto& layer : layers_) {
    for (const std::optional<LoraLinear>& linear : layer) {
      if (!linear.has_value()) continue;
      parameters.push_back(linear->a);
      parameters.push_back(linear->b);
    }
  }
  return parameters;
}

int64_t LoraAdapter::NumParameters() const {
  int64_t total = 0;
  for (const at::Tensor& parameter : Parameters()) total += parameter.numel();
  return total;
}

void LoraAdapter::SetRequiresGrad(bool requires_grad) {
  for (auto& layer : layers_) {
    for (std::optional<LoraLinear>& linear : layer) {
      if (!linear.has_value()) continue;
      linear->a.requires_grad_(requires_grad);
      linear->b.requires_grad_(requires_grad);
    }
  }
}

}  // namespace microrl::model
