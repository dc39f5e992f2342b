#ifndef MICRORL_REWARD_SERVICE_EXTRACTION_H_
#define MICRORL_REWARD_SERVICE_EXTRACTION_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace microrl::reward {

// The content of the last \boxed{...} (or \boxed ..., \fbox{...}) in `text`,
// with nested braces; nullopt if there is none (or it is unterminated).
std::optional<std::string> LastBoxed(absl::string_view text);

// Strips whole-answer math wrappers: $...$, $$...$$, \(...\), \[...\].
std::string StripMathDelimiters(absl::string_view answer);

struct ExtractionOptions {
  // Phrases after which the rest of a line is taken as the answer when there is
  // no \boxed{} ("the final answer is 42."). Matched case-insensitively; the
  // last occurrence wins. Empty: \boxed{} only.
  std::vector<std::string> fallback_phrases = {
      "the final answer is", "final answer:", "the answer is"};
};

// The answer in a completion (or in a reference solution): the last \boxed{},
// else the text after the last fallback phrase (up to the end of its line or
// sentence). nullopt if neither exists.
std::optional<std::string> ExtractAnswer(absl::string_view text,
                                         const ExtractionOptions& options);

}  // namespace microrl::reward

#endif  // MICRORL_REWARD_SERVICE_EXTRACTION_H_
