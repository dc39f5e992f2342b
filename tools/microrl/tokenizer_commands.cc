#include "tools/microrl/tokenizer_commands.h"

#include <functional>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/lines.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace microrl::cli {
namespace {

using nlohmann::json;

// Calls `handle` on each non-blank line parsed as a JSON object (Json: json, or
// ordered_json to keep key order); errors name the line.
template <typename Json = json>
absl::Status ForEachJsonLine(
    std::istream& in,
    const std::function<absl::Status(const std::type_identity_t<Json>&)>&
        handle) {
  return ForEachNonBlankLine(
      in, [&](int64_t line, const std::string& text) -> absl::Status {
        const Json value =
            Json::parse(text, nullptr, /*allow_exceptions=*/false);
        absl::Status status =
            value.is_object() ? handle(value)
                              : absl::InvalidArgumentError("not a JSON object");
        if (status.ok()) return status;
        return absl::Status(
            status.code(),
            absl::StrCat("stdin line ", line, ": ", status.message()));
      });
}

// Loads the tokenizer at `path`, then calls `handle` with it and the field
// `key` of each JSON line of `in`; a line without that field, or with one of
// another type than `type`, is refused as needing `want`.
absl::Status ForEachFieldWithTokenizer(
    const std::string& path, std::istream& in, const char* key,
    json::value_t type, const char* want,
    const std::function<absl::Status(const tokenizer::Tokenizer&, const json&)>&
        handle) {
  if (path.empty())
    return absl::InvalidArgumentError("--tokenizer is required");
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tok =
      tokenizer::Tokenizer::FromFile(path);
  if (!tok.ok()) return tok.status();
  return ForEachJsonLine(in, [&](const json& line) -> absl::Status {
    if (!line.contains(key) || line[key].type() != type) {
      return absl::InvalidArgumentError(absl::StrCat("needs ", want));
    }
    return handle(**tok, line[key]);
  });
}

}  // namespace

absl::Status RunTokenizeCommand(const std::string& tokenizer_path,
                                bool add_special_tokens, std::istream& in,
                                std::ostream& out) {
  auto encode = [&](const tokenizer::Tokenizer& tok,
                    const json& text) -> absl::Status {
    absl::StatusOr<std::vector<int32_t>> ids =
        tok.EncodeChecked(text.get<std::string>(), add_special_tokens);
    if (!ids.ok()) return ids.status();
    out << json{{"ids", *ids}}.dump() << "\n";
    return absl::OkStatus();
  };
  return ForEachFieldWithTokenizer(tokenizer_path, in, "text",
                                   json::value_t::string, "\"text\": \"...\"",
                                   encode);
}

absl::Status RunDetokenizeCommand(const std::string& tokenizer_path,
                                  bool skip_special_tokens, std::istream& in,
                                  std::ostream& out) {
  auto decode = [&](const tokenizer::Tokenizer& tok,
                    const json& list) -> absl::Status {
    std::vector<int32_t> ids;
    for (const json& id : list) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() >= tok.vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "ids must be integers in [0, ", tok.vocab_size(), ")"));
      }
      ids.push_back(id.get<int32_t>());
    }
    out << json{{"text", tok.Decode(ids, skip_special_tokens)}}.dump() << "\n";
    return absl::OkStatus();
  };
  return ForEachFieldWithTokenizer(tokenizer_path, in, "ids",
                                   json::value_t::array, "\"ids\": [...]",
                                   decode);
}

absl::Status RunRenderChatCommand(const std::string& tokenizer_config_path,
                                  const std::string& template_path,
                                  std::istream& in, std::ostream& out) {
  if (tokenizer_config_path.empty() && template_path.empty()) {
    return absl::InvalidArgumentError(
        "--tokenizer-config or --template-file is required");
  }
  absl::StatusOr<tokenizer::ChatTemplate> chat = absl::InternalError("unset");
  if (template_path.empty()) {
    chat = tokenizer::ChatTemplate::FromTokenizerConfig(tokenizer_config_path);
  } else {
    absl::StatusOr<std::string> source = ReadFileToString(template_path);
    if (!source.ok()) return source.status();
    nlohmann::ordered_json config = nlohmann::ordered_json::object();
    if (!tokenizer_config_path.empty()) {
      absl::StatusOr<std::string> text =
          ReadFileToString(tokenizer_config_path);
      if (!text.ok()) return text.status();
      config = nlohmann::ordered_json::parse(*text, nullptr, false);
      if (config.is_discarded()) {
        return absl::InvalidArgumentError(
            absl::StrCat(tokenizer_config_path, ": not JSON"));
      }
    }
    chat = tokenizer::ChatTemplate::FromSource(*source, config, template_path);
  }
  if (!chat.ok()) return chat.status();
  return ForEachJsonLine<nlohmann::ordered_json>(
      in, [&](const nlohmann::ordered_json& request) -> absl::Status {
        if (!request.contains("messages")) {
          return absl::InvalidArgumentError("needs {\"messages\": [...]}");
        }
        nlohmann::ordered_json extra = nlohmann::ordered_json::object();
        bool add_generation_prompt = false;
        for (const auto& [key, value] : request.items()) {
          if (key == "add_generation_prompt") {
            add_generation_prompt = value.is_boolean() && value.get<bool>();
          } else if (key != "messages") {
            extra[key] = value;
          }
        }
        absl::StatusOr<std::string> rendered =
            chat->Render(request["messages"], add_generation_prompt, extra);
        if (!rendered.ok()) return rendered.status();
        out << nlohmann::ordered_json{{"text", *rendered}}.dump() << "\n";
        return absl::OkStatus();
      });
}

}  // namespace microrl::cli
