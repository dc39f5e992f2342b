#include "reward_service/math_answer.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "absl/strings/str_cat.h"
#include "reward_service/math/budget.h"
#include "reward_service/math/compare.h"
#include "reward_service/math/node.h"
#include "reward_service/math/parser.h"
#include "reward_service/math/rational.h"

// Answer equivalence over reward_service/math/: normalize (normalize.cc),
// parse (parser.cc), compare (compare.cc, evaluate.cc) within a budget.
namespace microrl::reward {
namespace {

using math::Budget;
using math::Kind;
using math::NodeP;
using math::ParseOrText;

// What the answer looks like to a reader, for reasons: its normalized text.
std::string Shown(const std::string& normalized) {
  if (normalized.size() <= 60) return normalized;
  size_t cut = 57;  // not inside a UTF-8 sequence
  while (cut > 0 &&
         (static_cast<unsigned char>(normalized[cut]) & 0xC0) == 0x80)
    --cut;
  return normalized.substr(0, cut) + "...";
}

// -?digits<separator>digits, nothing else.
bool IsDigitsAroundSeparator(const std::string& s, char separator) {
  size_t i = !s.empty() && s[0] == '-' ? 1 : 0;
  const size_t start = i;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == start || i >= s.size() || s[i] != separator) return false;
  const size_t after = ++i;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  return i > after && i == s.size();
}

// "1,22" (a thousands number was read as one already) and "1.22".
bool IsDecimalComma(const std::string& s) {
  return IsDigitsAroundSeparator(s, ',');
}
bool IsPointDecimal(const std::string& s) {
  return IsDigitsAroundSeparator(s, '.');
}

}  // namespace

bool LooksLikeProse(absl::string_view answer) {
  return math::IsWordy(NormalizeLatex(answer));
}

Comparison CompareAnswers(absl::string_view reference, absl::string_view answer,
                          const MathLimits& limits) {
  Comparison result;
  if (answer.size() > limits.max_chars) {
    result.reason =
        absl::StrCat("answer longer than ", limits.max_chars, " characters");
    return result;
  }
  if (reference.size() > limits.max_chars * 4) {
    result.reason = "reference answer too long";
    return result;
  }
  std::string gold_text = NormalizeLatex(reference);
  std::string pred_text = NormalizeLatex(answer);
  // "1,22" against "1.22": a decimal comma, read so only against a number
  // written with a decimal point (otherwise "1,22" is a list).
  if (IsDecimalComma(gold_text) && IsPointDecimal(pred_text))
    std::replace(gold_text.begin(), gold_text.end(), ',', '.');
  if (IsDecimalComma(pred_text) && IsPointDecimal(gold_text))
    std::replace(pred_text.begin(), pred_text.end(), ',', '.');
  if (pred_text.empty()) {
    result.reason = "empty answer";
    return result;
  }
  // Identical after normalization: equal without parsing.
  if (gold_text == pred_text) {
    result.equal = true;
    return result;
  }
  Budget budget(limits.max_steps, limits.deadline);
  try {
    std::string gold_error, pred_error;
    NodeP gold = ParseOrText(gold_text, budget, &gold_error);
    NodeP pred = ParseOrText(pred_text, budget, &pred_error);
    const math::TreeComparison verdict = math::CompareTrees(gold, pred, budget);
    if (verdict.equal) {
      result.equal = true;
      return result;
    }
    if (verdict.too_large) {
      result.reason =
          absl::StrCat("a value is too large to compare exactly (over ",
                       Rational::kMaxBits, " bits)");
    } else if (gold->kind != Kind::kText && pred->kind == Kind::kText &&
               !pred_error.empty()) {
      result.reason = absl::StrCat("cannot parse the answer \"",
                                   Shown(pred_text), "\" (", pred_error, ")");
    } else {
      result.reason = absl::StrCat("answer ", Shown(pred_text),
                                   " != reference ", Shown(gold_text));
    }
  } catch (const math::TooComplex& e) {
    result.reason = e.why;
  } catch (const math::TimedOut&) {
    result.reason = "timeout";
    result.timed_out = true;
  }
  return result;
}

}  // namespace microrl::reward
