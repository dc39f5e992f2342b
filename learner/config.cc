#include "learner/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/enum_names.h"
#include "common/base/file.h"
#include "common/base/net.h"

namespace microrl::learner {
namespace {

// A mode: an enum set from one of its own names (see common/base/enum_names.h).
struct Choice {
  std::function<std::string()> get;            // the value's own name
  std::function<bool(absl::string_view)> set;  // false: not an own name
  std::string alternatives;                    // "a, b or c"
};

template <typename E, size_t N>
Choice ChoiceOf(E* value, const EnumName<E> (&names)[N]) {
  return {[value, &names] { return std::string(NameOf(*value, names)); },
          [value, &names](absl::string_view name) {
            const std::optional<E> parsed = ValueOfOwnName(name, names);
            if (parsed.has_value()) *value = *parsed;
            return parsed.has_value();
          },
          OwnNames(names)};
}

using FieldRef = std::variant<std::string*, int64_t*, uint64_t*, double*, bool*,
                              std::vector<std::string>*, Choice>;

struct Field {
  std::string key;  // "section.name"
  FieldRef ref;
};

// A peer's security keys: "<section>.tls_ca", ..., "<section>.token_file".
std::vector<Field> SecurityFields(const std::string& section,
                                  PeerSecurityConfig& s) {
  std::vector<Field> fields;
  for (const auto& [name, value] :
       {std::pair{"tls_ca", &s.tls_ca}, std::pair{"tls_cert", &s.tls_cert},
        std::pair{"tls_key", &s.tls_key},
        std::pair{"tls_server_name", &s.tls_server_name},
        std::pair{"token_file", &s.token_file}}) {
    fields.push_back({absl::StrCat(section, ".", name), value});
  }
  return fields;
}

// Every key, in the order config.yaml lists them.
std::vector<Field> Fields(TrainConfig& c) {
  std::vector<Field> fields;
  for (std::vector<Field>& part : std::vector<std::vector<Field>>{
           {
               {"run.name", &c.run_name},
               {"run.output_dir", &c.output_dir},
               {"run.seed", &c.seed},
               {"run.max_steps", &c.max_steps},
               {"run.time_budget_hours", &c.time_budget_hours},
               {"run.checkpoint_every", &c.checkpoint_every},
               {"run.keep_checkpoints", &c.keep_checkpoints},
               {"model.path", &c.model_path},
               {"model.hub_id", &c.model_hub_id},
               {"model.revision", &c.model_revision},
               {"model.device", &c.device},
               {"model.dtype", &c.dtype},
               {"model.gradient_checkpointing", &c.gradient_checkpointing},
               {"model.gpu_memory_gib", &c.gpu_memory_gib},
               {"lora.rank", &c.lora_rank},
               {"lora.alpha", &c.lora_alpha},
               {"lora.targets", &c.lora_targets},
               {"lora.rslora", &c.lora_rslora},
               {"lora.init", &c.lora_init},
               {"data.train", &c.train_path},
               {"data.problem_field", &c.problem_field},
               {"data.answer_field", &c.answer_field},
               {"data.completion_field", &c.completion_field},
               {"data.system_prompt", &c.system_prompt},
               {"data.instruction", &c.instruction},
               {"rollout.address", &c.rollout_address},
               {"rollout.addresses", &c.rollout_addresses},
               {"rollout.redispatch_after_s", &c.rollout_redispatch_after_s},
               {"rollout.prompts_per_step", &c.prompts_per_step},
               {"rollout.group_size", &c.group_size},
               {"rollout.max_response_tokens", &c.max_response_tokens},
               {"rollout.temperature", &c.temperature},
               {"rollout.top_p", &c.top_p},
               {"rollout.top_k", &c.top_k},
               {"rollout.colocated", &c.colocated},
               {"rollout.publish_dtype",
                ChoiceOf(&c.publish_dtype, kPublishDtypeNames)},
               {"rollout.publish_via",
                ChoiceOf(&c.publish_via, kPublishViaNames)},
               {"rollout.generate_timeout_s", &c.generate_timeout_s},
               {"rollout.max_wait_s", &c.rollout_max_wait_s},
               {"rollout.max_staleness", &c.max_staleness},
           },
           SecurityFields("rollout", c.rollout_security),
           {
               {"reward.address", &c.reward_address},
               {"reward.timeout_s", &c.reward_timeout_s},
               {"reward.max_wait_s", &c.reward_max_wait_s},
           },
           SecurityFields("reward", c.reward_security),
           {
               {"grpo.advantage", ChoiceOf(&c.advantage, kAdvantageNormNames)},
               {"grpo.advantage_epsilon", &c.advantage_epsilon},
               {"grpo.filter_zero_variance", &c.filter_zero_variance},
               {"grpo.clip_low", &c.clip_low},
               {"grpo.clip_high", &c.clip_high},
               {"grpo.dual_clip", &c.dual_clip},
               {"grpo.loss_aggregation",
                ChoiceOf(&c.loss_aggregation, kLossAggregationNames)},
               {"grpo.loss_horizon", &c.loss_horizon},
               {"grpo.kl_coef", &c.kl_coef},
               {"grpo.kl_estimator",
                ChoiceOf(&c.kl_estimator, kKlEstimatorNames)},
               {"grpo.entropy_coef", &c.entropy_coef},
               {"grpo.mini_batches", &c.mini_batches},
               {"grpo.epochs", &c.epochs},
               {"grpo.old_logprobs",
                ChoiceOf(&c.old_logprobs, kOldLogprobsNames)},
               {"grpo.micro_batch_tokens", &c.micro_batch_tokens},
               {"grpo.packing", &c.packing},
               {"grpo.share_prompts", &c.share_prompts},
               {"grpo.tis_cap", &c.tis_cap},
               {"grpo.is_mask", ChoiceOf(&c.is_mask, kIsMaskNames)},
               {"grpo.is_mask_low", &c.is_mask_low},
               {"grpo.is_mask_high", &c.is_mask_high},
               {"optim.lr", &c.lr},
               {"optim.beta1", &c.beta1},
               {"optim.beta2", &c.beta2},
               {"optim.epsilon", &c.adam_epsilon},
               {"optim.weight_decay", &c.weight_decay},
               {"optim.schedule", ChoiceOf(&c.schedule, kLrScheduleNames)},
               {"optim.warmup_steps", &c.warmup_steps},
               {"optim.min_lr_ratio", &c.min_lr_ratio},
               {"optim.max_grad_norm", &c.max_grad_norm},
               {"sft.batch_size", &c.sft_batch_size},
               {"eval.path", &c.eval_path},
               {"eval.every", &c.eval_every},
               {"eval.problems", &c.eval_problems},
               {"eval.max_tokens", &c.eval_max_tokens},
               {"eval.final_datasets", &c.final_datasets},
               {"eval.data_dir", &c.eval_data_dir},
               {"eval.final_samples", &c.final_samples},
               {"eval.final_temperature", &c.final_temperature},
               {"eval.final_top_p", &c.final_top_p},
               {"eval.final_compare_base", &c.final_compare_base},
               {"distributed.enabled", &c.distributed_enabled},
               {"distributed.timeout_s", &c.distributed_timeout_s},
               {"distributed.rollout_port_per_rank", &c.rollout_port_per_rank},
               {"distributed.eval_wait_s", &c.distributed_eval_wait_s},
               {"distributed.check_every", &c.distributed_check_every},
           }}) {
    for (Field& field : part) fields.push_back(std::move(field));
  }
  return fields;
}

// Settings whose default depends on others: grpo.tis_cap (-1) is 2 when
// rollouts may be stale, else off.
void ResolveAutomatic(TrainConfig& c) {
  if (c.tis_cap == -1) c.tis_cap = c.max_staleness > 0 ? 2.0 : 0.0;
}

std::string Where(const std::string& label, const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return label;
  return absl::StrCat(label, ":", mark.line + 1);
}

// Sets a mode from its name; an unknown name is refused naming the key and
// the alternatives.
absl::Status SetChoice(const Choice& choice, const std::string& key,
                       const std::string& name, const std::string& where) {
  if (choice.set(name)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", key, ": must be ",
                                                 choice.alternatives,
                                                 ", not \"", name, "\""));
}

// Sets `field` from a YAML node; errors name `where` and the key.
absl::Status Assign(const Field& field, const YAML::Node& node,
                    const std::string& where) {
  auto bad = [&](const char* want) {
    std::string got;
    if (node.IsScalar()) got = absl::StrCat(" \"", node.Scalar(), "\"");
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", field.key, ": expected ", want, got));
  };
  if (const Choice* choice = std::get_if<Choice>(&field.ref)) {
    if (!node.IsScalar()) return bad("a string");
    return SetChoice(*choice, field.key, node.Scalar(), where);
  }
  try {
    return std::visit(
        [&](auto target) -> absl::Status {
          if constexpr (std::is_same_v<decltype(target), Choice>) {
            return absl::OkStatus();  // handled above
          } else {
            using T = std::remove_pointer_t<decltype(target)>;
            if constexpr (std::is_same_v<T, std::vector<std::string>>) {
              if (!node.IsSequence()) return bad("a list of strings");
              target->clear();
              for (const YAML::Node& item : node) {
                if (!item.IsScalar()) return bad("a list of strings");
                target->push_back(item.Scalar());
              }
            } else {
              if (!node.IsScalar()) {
                return bad(std::is_same_v<T, std::string> ? "a string"
                           : std::is_same_v<T, bool>      ? "true or false"
                                                          : "a number");
              }
              if constexpr (std::is_same_v<T, std::string>) {
                *target = node.Scalar();
              } else {
                T value;
                if (!YAML::convert<T>::decode(node, value)) {
                  return bad(std::is_same_v<T, bool>     ? "true or false"
                             : std::is_same_v<T, double> ? "a number"
                             : std::is_same_v<T, uint64_t>
                                 ? "a non-negative integer"
                                 : "an integer");
                }
                *target = value;
              }
            }
            return absl::OkStatus();
          }
        },
        field.ref);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", field.key, ": ", e.what()));
  }
}

absl::Status ApplyDocument(TrainConfig& config, const YAML::Node& root,
                           const std::string& label) {
  if (root.IsNull()) return absl::OkStatus();
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(label, root),
                     ": the configuration must be a mapping of sections"));
  }
  std::map<std::string, Field> fields;
  std::set<std::string> sections;
  for (const Field& field : Fields(config)) {
    fields.emplace(field.key, field);
    sections.insert(std::string(absl::string_view(field.key).substr(
        0, absl::string_view(field.key).find('.'))));
  }
  for (const auto& section : root) {
    const std::string name = section.first.Scalar();
    if (name == "base") continue;
    if (!sections.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          Where(label, section.first), ": unknown section \"", name,
          "\" (sections: ", absl::StrJoin(sections, ", "), ")"));
    }
    if (!section.second.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(label, section.second), ": section ", name,
                       " must be a mapping"));
    }
    for (const auto& entry : section.second) {
      const std::string key = absl::StrCat(name, ".", entry.first.Scalar());
      auto it = fields.find(key);
      if (it == fields.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(label, entry.first), ": unknown key ", key));
      }
      if (absl::Status status =
              Assign(it->second, entry.second, Where(label, entry.second));
          !status.ok()) {
        return status;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyFile(TrainConfig& config, const std::string& path,
                       int depth) {
  if (depth > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": `base` nests more than 8 deep"));
  }
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  YAML::Node root;
  try {
    root = YAML::Load(*text);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.mark.line + 1, ": ", e.msg));
  }
  if (root.IsMap() && root["base"]) {
    const YAML::Node base = root["base"];
    if (!base.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(path, base), ": base must name a YAML file"));
    }
    const std::filesystem::path base_path =
        std::filesystem::path(path).parent_path() / base.Scalar();
    if (absl::Status status = ApplyFile(config, base_path.string(), depth + 1);
        !status.ok()) {
      return status;
    }
  }
  return ApplyDocument(config, root, path);
}

absl::Status ApplyOverrides(TrainConfig& config,
                            const std::vector<std::string>& overrides) {
  std::map<std::string, Field> fields;
  for (const Field& field : Fields(config)) fields.emplace(field.key, field);
  for (const std::string& override_text : overrides) {
    const size_t eq = override_text.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "override \"", override_text, "\": expected section.key=value"));
    }
    const std::string key = override_text.substr(0, eq);
    auto it = fields.find(key);
    if (it == fields.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("override \"", override_text, "\": unknown key ", key));
    }
    // A string key takes the text as it is (YAML would read "a: b" as a map).
    if (auto* text = std::get_if<std::string*>(&it->second.ref)) {
      **text = override_text.substr(eq + 1);
      continue;
    }
    if (const Choice* choice = std::get_if<Choice>(&it->second.ref)) {
      if (absl::Status status =
              SetChoice(*choice, it->second.key, override_text.substr(eq + 1),
                        "override");
          !status.ok()) {
        return status;
      }
      continue;
    }
    YAML::Node value;
    try {
      value = YAML::Load(override_text.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("override \"", override_text, "\": ", e.what()));
    }
    if (value.IsNull()) value = YAML::Node(std::string());
    if (absl::Status status = Assign(it->second, value, "override");
        !status.ok())
      return status;
  }
  return absl::OkStatus();
}

absl::Status Require(bool ok, const std::string& key, const std::string& what) {
  return ok ? absl::OkStatus()
            : absl::InvalidArgumentError(absl::StrCat(key, ": ", what));
}

}  // namespace

absl::StatusOr<TrainConfig> LoadTrainConfig(
    const std::string& path, const std::vector<std::string>& overrides) {
  TrainConfig config;
  if (!path.empty()) {
    if (absl::Status status = ApplyFile(config, path, 0); !status.ok())
      return status;
  }
  if (absl::Status status = ApplyOverrides(config, overrides); !status.ok())
    return status;
  ResolveAutomatic(config);
  if (absl::Status status = ValidateTrainConfig(config); !status.ok())
    return status;
  return config;
}

absl::StatusOr<TrainConfig> ParseTrainConfig(
    const std::string& yaml, const std::string& label,
    const std::vector<std::string>& overrides) {
  TrainConfig config;
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ":", e.mark.line + 1, ": ", e.msg));
  }
  if (absl::Status status = ApplyDocument(config, root, label); !status.ok())
    return status;
  if (absl::Status status = ApplyOverrides(config, overrides); !status.ok())
    return status;
  ResolveAutomatic(config);
  if (absl::Status status = ValidateTrainConfig(config); !status.ok())
    return status;
  return config;
}

absl::Status ValidateTrainConfig(const TrainConfig& c) {
  const std::set<std::string> dtypes = {"auto", "float32", "bfloat16",
                                        "float16"};
  for (const absl::Status& status : {
           Require(
               !c.run_name.empty() && c.run_name.find('/') == std::string::npos,
               "run.name", "must be a non-empty name without '/'"),
           Require(c.max_steps >= 1, "run.max_steps", "must be >= 1"),
           Require(c.time_budget_hours > 0, "run.time_budget_hours",
                   "must be > 0"),
           Require(c.checkpoint_every >= 1, "run.checkpoint_every",
                   "must be >= 1"),
           Require(c.keep_checkpoints >= 0, "run.keep_checkpoints",
                   "must be >= 0"),
           Require(!c.model_path.empty(), "model.path", "is required"),
           Require(dtypes.count(c.dtype) > 0, "model.dtype",
                   "must be auto, float32, bfloat16 or float16"),
           Require(c.gpu_memory_gib >= 0, "model.gpu_memory_gib",
                   "must be >= 0 (0: no cap)"),
           Require(c.publish_via != PublishVia::kCudaIpc ||
                       c.device.rfind("cuda", 0) == 0,
                   "rollout.publish_via",
                   "cuda_ipc needs the learner on a GPU (model.device cuda)"),
           Require(c.lora_rank >= 1, "lora.rank", "must be >= 1"),
           Require(c.lora_alpha > 0, "lora.alpha", "must be > 0"),
           Require(!c.lora_targets.empty(), "lora.targets",
                   "must name at least one module"),
           Require(std::all_of(c.lora_targets.begin(), c.lora_targets.end(),
                               [](const std::string& t) {
                                 static const std::set<std::string> known = {
                                     "q_proj",    "k_proj",    "v_proj",
                                     "o_proj",    "gate_proj", "up_proj",
                                     "down_proj", "q",         "k",
                                     "v",         "o",         "gate",
                                     "up",        "down"};
                                 return known.count(t) > 0;
                               }),
                   "lora.targets",
                   "modules are q_proj, k_proj, v_proj, o_proj, gate_proj, "
                   "up_proj, down_proj"),
           Require(!c.output_dir.empty(), "run.output_dir",
                   "must not be empty"),
           Require(!c.train_path.empty(), "data.train", "is required"),
           Require(!c.problem_field.empty(), "data.problem_field",
                   "must not be empty"),
           Require(!c.answer_field.empty(), "data.answer_field",
                   "must not be empty"),
           Require(c.instruction.find("{problem}") != std::string::npos,
                   "data.instruction", "must contain {problem}"),
           Require(c.prompts_per_step >= 1, "rollout.prompts_per_step",
                   "must be >= 1"),
           Require(
               c.group_size >= 2, "rollout.group_size",
               "must be >= 2 (advantages compare completions of one prompt)"),
           Require(c.max_response_tokens >= 1, "rollout.max_response_tokens",
                   "must be >= 1"),
           Require(c.temperature > 0, "rollout.temperature",
                   "must be > 0 (GRPO needs sampled, not greedy, completions)"),
           Require(c.top_p > 0 && c.top_p <= 1, "rollout.top_p",
                   "must be in (0, 1]"),
           Require(c.generate_timeout_s > 0, "rollout.generate_timeout_s",
                   "must be > 0"),
           Require(!c.reward_address.empty(), "reward.address", "is required"),
           Require(c.rollout_addresses.size() <= 1 || !c.colocated,
                   "rollout.colocated",
                   "needs a single rollout server (rollout.addresses names "
                   "several)"),
           Require(
               std::all_of(
                   c.rollout_addresses.begin(), c.rollout_addresses.end(),
                   [](const std::string& a) {
                     return ParseHostPort(
                                absl::StartsWith(a, "dns:") ? a.substr(4) : a)
                         .ok();
                   }),
               "rollout.addresses", "each must be host:port or dns:name:port"),
           Require(c.max_staleness >= 0 && c.max_staleness <= 15,
                   "rollout.max_staleness", "must be in [0, 15]"),
           Require(c.max_staleness == 0 || !c.colocated,
                   "rollout.max_staleness",
                   "needs rollout servers on their own devices (with "
                   "rollout.colocated the server sleeps during the update)"),
           Require(c.max_staleness == 0 ||
                       c.old_logprobs == OldLogprobs::kRecompute,
                   "rollout.max_staleness",
                   "needs grpo.old_logprobs: recompute (the update's ratios "
                   "are to the adapter it starts from, not the rollout's)"),
           Require(c.tis_cap >= 0 || c.tis_cap == -1, "grpo.tis_cap",
                   "must be >= 0 (0: off), or -1 (2 with "
                   "rollout.max_staleness > 0, else off)"),
           Require(c.tis_cap <= 0 || c.old_logprobs == OldLogprobs::kRecompute,
                   "grpo.tis_cap",
                   "needs grpo.old_logprobs: recompute (with the rollout's old "
                   "log-probs every ratio is 1)"),
           Require(c.is_mask == IsMask::kNone ||
                       c.old_logprobs == OldLogprobs::kRecompute,
                   "grpo.is_mask",
                   "needs grpo.old_logprobs: recompute (with the rollout's old "
                   "log-probs every ratio is 1)"),
           Require(
               c.is_mask_low >= 0 && c.is_mask_low <= 1 && c.is_mask_high >= 1,
               "grpo.is_mask_low",
               "must be in [0, 1], and grpo.is_mask_high >= 1"),
           Require(c.rollout_redispatch_after_s > 0,
                   "rollout.redispatch_after_s", "must be > 0"),
           Require(!c.rollout_address.empty(), "rollout.address",
                   "is required"),
           Require(c.reward_timeout_s > 0, "reward.timeout_s", "must be > 0"),
           Require(c.rollout_max_wait_s > 0, "rollout.max_wait_s",
                   "must be > 0"),
           Require(c.reward_max_wait_s > 0, "reward.max_wait_s", "must be > 0"),
           Require(c.advantage_epsilon > 0, "grpo.advantage_epsilon",
                   "must be > 0"),
           Require(c.clip_low > 0 && c.clip_low < 1, "grpo.clip_low",
                   "must be in (0, 1)"),
           Require(c.clip_high > 0, "grpo.clip_high", "must be > 0"),
           Require(c.loss_horizon >= 0, "grpo.loss_horizon", "must be >= 0"),
           Require(c.kl_coef >= 0, "grpo.kl_coef", "must be >= 0"),
           Require(c.mini_batches >= 1, "grpo.mini_batches", "must be >= 1"),
           Require(c.mini_batches <= c.prompts_per_step * c.group_size,
                   "grpo.mini_batches",
                   "must not exceed the completions per step"),
           Require(c.epochs >= 1, "grpo.epochs", "must be >= 1"),
           Require(c.micro_batch_tokens >= 1, "grpo.micro_batch_tokens",
                   "must be >= 1"),
           Require(c.lr >= 0, "optim.lr", "must be >= 0"),
           Require(c.beta1 >= 0 && c.beta1 < 1, "optim.beta1",
                   "must be in [0, 1)"),
           Require(c.beta2 >= 0 && c.beta2 < 1, "optim.beta2",
                   "must be in [0, 1)"),
           Require(c.adam_epsilon > 0, "optim.epsilon", "must be > 0"),
           Require(c.weight_decay >= 0, "optim.weight_decay", "must be >= 0"),
           Require(c.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0"),
           Require(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1,
                   "optim.min_lr_ratio", "must be in [0, 1]"),
           Require(c.sft_batch_size >= 1, "sft.batch_size", "must be >= 1"),
           Require(c.eval_every >= 0, "eval.every", "must be >= 0"),
           Require(c.eval_every == 0 || !c.eval_path.empty(), "eval.path",
                   "is required when eval.every > 0"),
           Require(c.eval_problems >= 0, "eval.problems", "must be >= 0"),
           Require(c.eval_max_tokens >= 0, "eval.max_tokens", "must be >= 0"),
           Require(c.final_samples >= 1, "eval.final_samples", "must be >= 1"),
           Require(c.final_temperature >= 0, "eval.final_temperature",
                   "must be >= 0"),
           Require(c.final_top_p > 0 && c.final_top_p <= 1, "eval.final_top_p",
                   "must be in (0, 1]"),
           Require(c.distributed_timeout_s > 0, "distributed.timeout_s",
                   "must be > 0"),
           Require(c.distributed_eval_wait_s > 0, "distributed.eval_wait_s",
                   "must be > 0"),
           Require(c.distributed_check_every >= 0, "distributed.check_every",
                   "must be >= 0"),
       }) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<rpc::ClientSecurity> ResolvePeerSecurity(
    const PeerSecurityConfig& peer, const std::string& section) {
  rpc::ClientSecurity security;
  security.tls_ca_file = peer.tls_ca;
  // The deployment's CA (docker compose sets it with MICRORL_AUTH_TOKEN).
  if (const char* ca = std::getenv("MICRORL_TLS_CA");
      security.tls_ca_file.empty() && ca != nullptr && *ca != '\0') {
    security.tls_ca_file = ca;
  }
  security.tls_cert_file = peer.tls_cert;
  security.tls_key_file = peer.tls_key;
  security.tls_server_name = peer.tls_server_name;
  if (!peer.token_file.empty()) {
    absl::StatusOr<std::string> token = rpc::ReadTokenFile(peer.token_file);
    if (!token.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(section, ".token_file: ", token.status().message()));
    }
    security.token = *token;
  } else if (const char* env = std::getenv("MICRORL_AUTH_TOKEN");
             env != nullptr && *env != '\0') {
    // The deployment's shared token (docker compose sets it for all three).
    if (absl::Status s = rpc::ValidateToken(env); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("MICRORL_AUTH_TOKEN: ", s.message()));
    }
    security.token = env;
  }
  if (absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
          rpc::MakeChannelCredentials(security);
      !credentials.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(section, ".tls_*: ", credentials.status().message()));
  }
  return security;
}

std::string TrainConfigToYaml(const TrainConfig& config) {
  TrainConfig copy = config;
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  for (const Field& field : Fields(copy)) {
    const absl::string_view key(field.key);
    const std::string this_section(key.substr(0, key.find('.')));
    if (this_section != section) {
      if (!section.empty()) out << YAML::EndMap;
      section = this_section;
      out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    }
    out << YAML::Key << std::string(key.substr(key.find('.') + 1))
        << YAML::Value;
    std::visit(
        [&](const auto& value) {
          using T = std::remove_pointer_t<std::decay_t<decltype(value)>>;
          if constexpr (std::is_same_v<T, Choice>) {
            out << YAML::DoubleQuoted << value.get();
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            out << YAML::Flow << *value;
          } else if constexpr (std::is_same_v<T, std::string>) {
            out << YAML::DoubleQuoted << *value;
          } else {
            out << *value;
          }
        },
        field.ref);
  }
  if (!section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace microrl::learner
