#ifndef MICRORL_REWARD_SERVICE_EXTRACTION_H_
#define MICRORL_REWARD_SERVICE_EXTRACTION_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/base/enum_names.h"

// Finding the final answer in free model output (or in a reference solution).
// Pure functions over text; thread-safe.
namespace microrl::reward {

// The content of the last \boxed{...} (or \boxed ..., \fbox{...}) in `text`,
// with nested braces; nullopt if there is none (or it is unterminated).
std::optional<std::string> LastBoxed(absl::string_view text);

// The last \boxed{} and the boxes before it that are joined to it: a box is
// joined to the next when under 10 characters separate them, or under 70 with
// a ",", ";", "and" or "or" between different contents ("\boxed{1}, \boxed{2}
// and \boxed{3}" gives {"1", "2", "3"}; "\boxed{1} papers and \boxed{2} bins"
// gives {"1", "2"}); a repeated content is kept once. *joined_by_words says
// whether an "and"/"or" joined them. Empty when the text has no complete box.
std::vector<std::string> TrailingBoxes(absl::string_view text,
                                       bool* joined_by_words = nullptr);

// Strips whole-answer math wrappers: $...$, $$...$$, \(...\), \[...\].
std::string StripMathDelimiters(absl::string_view answer);

// Where an extracted answer came from, in the order they are tried.
enum class AnswerSource {
  kBoxed,   // the last \boxed{} (with the boxes joined to it, as one list)
  kWhole,   // the whole text is a bare answer ("x = 5", "\frac{1}{2}")
  kPhrase,  // after a phrase: "The final answer is $7$", "Answer: 42"
  kMath,    // the last display or inline math ($...$, \[...\], \(...\))
  kEquals,  // the right-hand side of the last '=' / \approx of the text
  kNumber,  // the last number-like expression of plain text
  kText,    // a short text with none of the above ("Sunday")
};
inline constexpr EnumName<AnswerSource> kAnswerSourceNames[] = {
    {AnswerSource::kBoxed, "boxed"},   {AnswerSource::kWhole, "whole"},
    {AnswerSource::kPhrase, "phrase"}, {AnswerSource::kMath, "math"},
    {AnswerSource::kEquals, "equals"}, {AnswerSource::kNumber, "number"},
    {AnswerSource::kText, "text"}};
const char* AnswerSourceName(AnswerSource source);

struct ExtractedAnswer {
  std::string text;
  AnswerSource source = AnswerSource::kWhole;
};

struct ExtractionOptions {
  // Phrases introducing a final answer, case-insensitive, tried in this order
  // (the last occurrence of a phrase first). What follows a phrase is its first
  // math ($...$) within a short distance, else the rest of its sentence.
  // Empty: \boxed{} and bare answers only (no free-text fallbacks).
  std::vector<std::string> fallback_phrases = {"final answer", "answer"};
};

// The answer in a completion, a bare answer or a reference solution, by the
// first rule that finds one (AnswerSource's order; see docs/reward.md).
// Searches from the end: text of any length is accepted, and only the region
// near each candidate is examined. nullopt if nothing answer-like is found.
std::optional<ExtractedAnswer> FindAnswer(absl::string_view text,
                                          const ExtractionOptions& options);

// FindAnswer's text.
std::optional<std::string> ExtractAnswer(absl::string_view text,
                                         const ExtractionOptions& options);

}  // namespace microrl::reward

#endif  // MICRORL_REWARD_SERVICE_EXTRACTION_H_
