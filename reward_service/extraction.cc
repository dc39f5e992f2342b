#include "reward_service/extraction.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"

namespace microrl::reward {
namespace {

bool IsLetter(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) != 0;
}

// Content of the brace group starting at text[open] == '{'; npos-safe.
std::optional<std::string> BraceGroup(absl::string_view text, size_t open) {
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {  // escaped brace: \{ \}
      ++i;
      continue;
    }
    if (c == '{') ++depth;
    if (c == '}' && --depth == 0)
      return std::string(text.substr(open + 1, i - open - 1));
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> LastBoxed(absl::string_view text) {
  size_t best = absl::string_view::npos;
  size_t name_length = 0;
  for (const absl::string_view command : {"\\boxed", "\\fbox"}) {
    size_t at = text.rfind(command);
    // Skip longer command names that merely start the same way (\boxedx).
    while (at != absl::string_view::npos) {
      const size_t after = at + command.size();
      if (after >= text.size() || !IsLetter(text[after])) break;
      at = at == 0 ? absl::string_view::npos : text.rfind(command, at - 1);
    }
    if (at != absl::string_view::npos &&
        (best == absl::string_view::npos || at > best)) {
      best = at;
      name_length = command.size();
    }
  }
  if (best == absl::string_view::npos) return std::nullopt;
  size_t pos = best + name_length;
  while (pos < text.size() && text[pos] == ' ') ++pos;
  if (pos < text.size() && text[pos] == '{') return BraceGroup(text, pos);
  if (pos > best + name_length) {
    // "\boxed 42": up to the next space, '$' or end.
    size_t end = pos;
    while (end < text.size() && text[end] != '$' &&
           !std::isspace(static_cast<unsigned char>(text[end])))
      ++end;
    if (end > pos) return std::string(text.substr(pos, end - pos));
  }
  return std::nullopt;
}

std::string StripMathDelimiters(absl::string_view answer) {
  absl::string_view s = absl::StripAsciiWhitespace(answer);
  bool changed = true;
  while (changed && !s.empty()) {
    changed = false;
    for (const auto& [open, close] :
         {std::pair{"$$", "$$"}, std::pair{"$", "$"}, std::pair{"\\(", "\\)"},
          std::pair{"\\[", "\\]"}}) {
      const absl::string_view o = open, c = close;
      if (s.size() >= o.size() + c.size() && absl::StartsWith(s, o) &&
          absl::EndsWith(s, c)) {
        s = absl::StripAsciiWhitespace(
            s.substr(o.size(), s.size() - o.size() - c.size()));
        changed = true;
        break;
      }
    }
  }
  return std::string(s);
}

std::optional<std::string> ExtractAnswer(absl::string_view text,
                                         const ExtractionOptions& options) {
  if (std::optional<std::string> boxed = LastBoxed(text))
    return StripMathDelimiters(*boxed);
  const std::string lower = absl::AsciiStrToLower(text);
  size_t best = std::string::npos;
  size_t best_end = 0;
  for (const std::string& phrase : options.fallback_phrases) {
    const std::string needle = absl::AsciiStrToLower(phrase);
    if (needle.empty()) continue;
    const size_t at = lower.rfind(needle);
    if (at != std::string::npos && (best == std::string::npos || at > best)) {
      best = at;
      best_end = at + needle.size();
    }
  }
  if (best == std::string::npos) return std::nullopt;
  absl::string_view rest = text.substr(best_end);
  const size_t newline = rest.find('\n');
  if (newline != absl::string_view::npos) rest = rest.substr(0, newline);
  rest = absl::StripAsciiWhitespace(rest);
  absl::ConsumePrefix(&rest, ":");
  rest = absl::StripAsciiWhitespace(rest);
  // A sentence-final period (not a decimal point) ends the answer.
  while (!rest.empty() && (rest.back() == '.' || rest.back() == ' '))
    rest.remove_suffix(1);
  if (rest.empty()) return std::nullopt;
  return StripMathDelimiters(rest);
}

}  // namespace microrl::reward
