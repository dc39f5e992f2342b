#ifndef MICRORL_TOOLS_MICRORL_TOKENIZER_COMMANDS_H_
#define MICRORL_TOOLS_MICRORL_TOKENIZER_COMMANDS_H_

#include <istream>
#include <ostream>
#include <string>

#include "absl/status/status.h"

// The `microrl` tool's text commands. Each reads JSON lines from `in` and
// writes one JSON line per input line, in order, to `out`. A malformed line
// stops the command with InvalidArgument naming the line (earlier lines are
// answered).
namespace microrl::cli {

// `microrl tokenize`: {"text": "..."} -> {"ids": [...]}.
absl::Status RunTokenizeCommand(const std::string& tokenizer_path,
                                bool add_special_tokens, std::istream& in,
                                std::ostream& out);

// `microrl detokenize`: {"ids": [...]} -> {"text": "..."}.
absl::Status RunDetokenizeCommand(const std::string& tokenizer_path,
                                  bool skip_special_tokens, std::istream& in,
                                  std::ostream& out);

// `microrl render-chat`: {"messages": [...], "add_generation_prompt": bool,
// other template variables (tools, enable_thinking, ...)} -> {"text": "..."},
// with the chat template of `tokenizer_config_path` (tokenizer_config.json), or
// of `template_path` (a .jinja file) when given.
absl::Status RunRenderChatCommand(const std::string& tokenizer_config_path,
                                  const std::string& template_path,
                                  std::istream& in, std::ostream& out);

}  // namespace microrl::cli

#endif  // MICRORL_TOOLS_MICRORL_TOKENIZER_COMMANDS_H_
