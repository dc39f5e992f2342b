#include "reward_service/think_format.h"

#include <vector>

#include "absl/strings/ascii.h"

namespace microrl::reward {
namespace {

constexpr absl::string_view kOpen = "<think>";
constexpr absl::string_view kClose = "</think>";

std::vector<size_t> FindAll(absl::string_view text, absl::string_view needle) {
  std::vector<size_t> at;
  for (size_t p = text.find(needle); p != absl::string_view::npos;
       p = text.find(needle, p + needle.size())) {
    at.push_back(p);
  }
  return at;
}

}  // namespace

bool PromptOpensThink(absl::string_view prompt) {
  const size_t open = prompt.rfind(kOpen);
  if (open == absl::string_view::npos) return false;
  return prompt.find(kClose, open) == absl::string_view::npos;
}

ThinkLayout AnalyzeThink(absl::string_view prompt,
                         absl::string_view completion) {
  ThinkLayout layout;
  const bool opened_by_prompt = PromptOpensThink(prompt);
  const std::vector<size_t> opens = FindAll(completion, kOpen);
  const std::vector<size_t> closes = FindAll(completion, kClose);
  if (!opened_by_prompt && opens.empty() && closes.empty()) {
    layout.answer_region = std::string(completion);
    layout.problem = "no <think>...</think> block";
    return layout;
  }
  if (closes.empty()) {
    layout.problem = "the <think> block is never closed";
    return layout;  // no answer region: everything is thought
  }
  // The answer may only come after the last </think>.
  layout.answer_region =
      std::string(completion.substr(closes.back() + kClose.size()));
  const size_t expected_opens = opened_by_prompt ? 0 : 1;
  if (closes.size() > 1 || opens.size() != expected_opens) {
    layout.problem =
        opened_by_prompt && !opens.empty()
            ? "a nested or repeated <think> inside the prompt's open block"
            : "repeated or nested <think> blocks";
    return layout;
  }
  if (!opened_by_prompt) {
    // <think> must come first (after whitespace) and before </think>.
    if (!absl::StripAsciiWhitespace(completion.substr(0, opens[0])).empty()) {
      layout.problem = "text before <think>";
      return layout;
    }
    if (opens[0] > closes[0]) {
      layout.problem = "</think> before <think>";
      return layout;
    }
  }
  if (absl::StripAsciiWhitespace(layout.answer_region).empty()) {
    layout.problem = "nothing after </think>";
    return layout;
  }
  layout.well_formed = true;
  return layout;
}

}  // namespace microrl::reward
