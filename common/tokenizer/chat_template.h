#ifndef MICRORL_COMMON_TOKENIZER_CHAT_TEMPLATE_H_
#define MICRORL_COMMON_TOKENIZER_CHAT_TEMPLATE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/tokenizer/jinja.h"
#include "nlohmann/json.hpp"

namespace microrl::tokenizer {

// A model's chat template with the special tokens its tokenizer_config.json
// names, rendered as transformers' apply_chat_template renders it. Immutable;
// thread-safe.
class ChatTemplate {
 public:
  // From tokenizer_config.json: "chat_template" (a string, or a list of
  // {"name", "template"} from which "default" is taken) and the bos/eos/unk/pad
  // tokens (strings or {"content": ...}).
  static absl::StatusOr<ChatTemplate> FromTokenizerConfig(
      const std::string& path);
  // From template source (e.g. a .jinja file's contents) and a
  // tokenizer_config.json-shaped object for the special tokens (may be empty).
  static absl::StatusOr<ChatTemplate> FromSource(
      const std::string& source, const nlohmann::ordered_json& config,
      const std::string& name);

  // Renders `messages` (a list of {"role", "content", ...}). `extra` holds
  // further template variables (tools, enable_thinking, date_string, ...);
  // `tools` and `documents` are none unless given, as in transformers.
  absl::StatusOr<std::string> Render(
      const nlohmann::ordered_json& messages, bool add_generation_prompt,
      const nlohmann::ordered_json& extra =
          nlohmann::ordered_json::object()) const;

  // The configured special tokens ("" when unset).
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

 private:
  std::shared_ptr<const jinja::Template> template_;
  std::string bos_token_, eos_token_, unk_token_, pad_token_;
  nlohmann::ordered_json additional_special_tokens_;
};

}  // namespace microrl::tokenizer

#endif  // MICRORL_COMMON_TOKENIZER_CHAT_TEMPLATE_H_
