#include "reward_service/scorer.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "reward_service/think_format.h"

namespace microrl::reward {
namespace {

MathLimits Limits(const ScoreOptions& options, absl::Time start) {
  MathLimits limits;
  limits.max_chars = options.max_answer_chars;
  limits.max_steps = options.max_steps;
  limits.deadline = start + options.item_deadline;
  return limits;
}

void Correctness(const std::string& answer, const ScoreInput& input,
                 const ScoreOptions& options, absl::Time start,
                 ScoreOutput* out) {
  out->extracted_answer = answer;
  const std::string reference = ReferenceAnswer(input.ground_truth);
  if (reference.empty()) {
    out->reason = "empty ground truth";
    return;
  }
  const Comparison comparison =
      CompareAnswers(reference, answer, Limits(options, start));
  out->correct = comparison.equal;
  out->timed_out = comparison.timed_out;
  if (!comparison.equal) out->reason = comparison.reason;
}

// `text` with every byte that is not part of a valid UTF-8 sequence replaced by
// U+FFFD: results go into protobuf strings and JSON, which require UTF-8.
std::string ValidUtf8(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t length = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3
                             : (c >> 3) == 0x1E ? 4 : 0;
    bool valid = length > 0 && i + length <= text.size();
    for (size_t k = 1; valid && k < length; ++k)
      valid = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    if (valid && length > 1) {  // no overlong forms, surrogates or > U+10FFFF
      const auto c1 = static_cast<unsigned char>(text[i + 1]);
      valid = !(c == 0xC0 || c == 0xC1) && !(c == 0xE0 && c1 < 0xA0) &&
              !(c == 0xED && c1 >= 0xA0) && !(c == 0xF0 && c1 < 0x90) &&
              !(c == 0xF4 && c1 >= 0x90) && c <= 0xF4;
    }
    if (!valid) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    out.append(text, i, length);
    i += length;
  }
  return out;
}

void Finish(const ScoreOptions& options, absl::Time start, double format,
            ScoreOutput* out) {
  out->extracted_answer = ValidUtf8(out->extracted_answer);
  out->reason = ValidUtf8(out->reason);
  out->components["correct"] = out->correct ? 1.0 : 0.0;
  out->reward = options.correct_weight * out->components["correct"];
  if (format >= 0) {
    out->components["format"] = format;
    out->reward += options.format_weight * format;
  }
  out->seconds = absl::ToDoubleSeconds(absl::Now() - start);
}

}  // namespace

std::string ReferenceAnswer(const std::string& ground_truth) {
  // A reference is read like a prediction (a bare answer, or a solution whose
  // answer is boxed or stated), with every free-text rule on.
  if (std::optional<std::string> answer =
          ExtractAnswer(ground_truth, ExtractionOptions())) {
    return *answer;
  }
  return StripMathDelimiters(ground_truth);
}

ScoreOutput ScoreCompletion(const ScoreInput& input,
                            const ScoreOptions& options) {
  const absl::Time start = absl::Now();
  ScoreOutput out;
  out.id = input.id;
  try {
    const ThinkLayout layout = AnalyzeThink(input.prompt, input.completion);
    const double format =
        layout.well_formed && LastBoxed(layout.answer_region) ? 1.0 : 0.0;
    std::optional<ExtractedAnswer> answer =
        FindAnswer(layout.answer_region, options.extraction);
    if (!answer) {
      out.reason = layout.answer_region.empty() && !layout.problem.empty()
                       ? absl::StrCat("no answer: ", layout.problem)
                       : "no answer found (no \\boxed{}, answer phrase, "
                         "math or number)";
    } else {
      out.answer_source = AnswerSourceName(answer->source);
      Correctness(answer->text, input, options, start, &out);
    }
    if (format == 0) {
      const std::string why = !layout.problem.empty()
                                  ? layout.problem
                                  : "no \\boxed{} after </think>";
      out.reason = out.reason.empty()
                       ? absl::StrCat("format: ", why)
                       : absl::StrCat(out.reason, "; format: ", why);
    }
    Finish(options, start, format, &out);
  } catch (
      const std::exception& e) {  // bad_alloc and the like: the item scores 0
    out = ScoreOutput();
    out.id = input.id;
    out.reason = absl::StrCat("internal error: ", e.what());
    Finish(options, start, 0.0, &out);
  }
  return out;
}

ScoreOutput ScoreAnswer(const ScoreInput& input, const ScoreOptions& options) {
  const absl::Time start = absl::Now();
  ScoreOutput out;
  out.id = input.id;
  try {
    std::optional<std::string> boxed = LastBoxed(input.completion);
    Correctness(StripMathDelimiters(boxed ? *boxed : input.completion), input,
                options, start, &out);
    Finish(options, start, /*format=*/-1, &out);
  } catch (const std::exception& e) {
    out = ScoreOutput();
    out.id = input.id;
    out.reason = absl::StrCat("internal error: ", e.what());
    Finish(options, start, -1, &out);
  }
  return out;
}

}  // namespace microrl::reward
