#include "common/tokenizer/chat_template.h"

#include "absl/strings/str_cat.h"
#include "common/base/file.h"

namespace microrl::tokenizer {
namespace {

using nlohmann::ordered_json;

// A special token as tokenizer_config.json spells it: a string, an AddedToken
// dict with "content", or null.
std::string TokenText(const ordered_json& config, const char* key) {
  if (!config.contains(key)) return "";
  const ordered_json& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") &&
      value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromTokenizerConfig(
    const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  const ordered_json config =
      ordered_json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a JSON object"));
  }
  if (!config.contains("chat_template")) {
    return absl::NotFoundError(absl::StrCat(path, ": no chat_template"));
  }
  const ordered_json& templates = config["chat_template"];
  std::string source;
  if (templates.is_string()) {
    source = templates.get<std::string>();
  } else if (templates.is_array()) {
    for (const ordered_json& entry : templates) {
      if (entry.is_object() && entry.value("name", "") == "default" &&
          entry.contains("template") && entry["template"].is_string()) {
        source = entry["template"].get<std::string>();
      }
    }
    if (source.empty()) {
      return absl::NotFoundError(
          absl::StrCat(path, ": no chat_template named \"default\""));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": chat_template is not a string"));
  }
  return FromSource(source, config, path);
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(
    const std::string& source, const ordered_json& config,
    const std::string& name) {
  absl::StatusOr<std::shared_ptr<const jinja::Template>> parsed =
      jinja::Template::Parse(source, name);
  if (!parsed.ok()) return parsed.status();
  ChatTemplate chat;
  chat.template_ = *std::move(parsed);
  if (config.is_object()) {
    chat.bos_token_ = TokenText(config, "bos_token");
    chat.eos_token_ = TokenText(config, "eos_token");
    chat.unk_token_ = TokenText(config, "unk_token");
    chat.pad_token_ = TokenText(config, "pad_token");
    if (config.contains("additional_special_tokens")) {
      chat.additional_special_tokens_ = config["additional_special_tokens"];
    }
  }
  return chat;
}

absl::StatusOr<std::string> ChatTemplate::Render(
    const ordered_json& messages, bool add_generation_prompt,
    const ordered_json& extra) const {
  if (!messages.is_array())
    return absl::InvalidArgumentError("messages must be a list");
  for (const ordered_json& message : messages) {
    if (!message.is_object())
      return absl::InvalidArgumentError("each message must be an object");
  }
  auto variables = std::make_shared<jinja::Dict>();
  // What transformers passes: the special tokens it knows, then the call's own.
  if (!bos_token_.empty())
    variables->Set("bos_token", jinja::Value(bos_token_));
  if (!eos_token_.empty())
    variables->Set("eos_token", jinja::Value(eos_token_));
  if (!unk_token_.empty())
    variables->Set("unk_token", jinja::Value(unk_token_));
  if (!pad_token_.empty())
    variables->Set("pad_token", jinja::Value(pad_token_));
  if (additional_special_tokens_.is_array()) {
    variables->Set("additional_special_tokens",
                   jinja::Value::FromJson(additional_special_tokens_));
  }
  variables->Set("messages", jinja::Value::FromJson(messages));
  variables->Set("tools", jinja::Value::None());
  variables->Set("documents", jinja::Value::None());
  variables->Set("add_generation_prompt", jinja::Value(add_generation_prompt));
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) {
      variables->Set(key, jinja::Value::FromJson(value));
    }
  }
  return template_->Render(jinja::Value::FromDict(variables));
}

}  // namespace microrl::tokenizer
