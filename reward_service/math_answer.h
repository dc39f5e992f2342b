#ifndef MICRORL_REWARD_SERVICE_MATH_ANSWER_H_
#define MICRORL_REWARD_SERVICE_MATH_ANSWER_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

// Mathematical equivalence of two final answers, in C++ with no Python:
//
// 1. LaTeX normalization: math delimiters, \left/\right and sizing commands,
//    spacing commands, \dfrac/\tfrac, \text{}/\mathrm{}/\mbox{} (units
//    dropped), degrees, dollar signs, thousands separators, Unicode math
//    symbols.
// 2. A parser to an expression tree: integers, decimals, scientific notation,
//    + - * / ^ (LaTeX's one-character exponents), implicit multiplication,
//    \frac, \sqrt[n]{}, \binom, factorials, percentages, \pi, e, i, functions
//    (trigonometric, logarithms, exp, ...), variables with subscripts, = and
//    inequalities, \pm, \infty, sets, tuples, intervals with open/closed ends,
//    unions, matrices, |x|, text answers.
// 3. Comparison: exact rational arithmetic where possible (so 025 = 25,
//    2.50 = 5/2, 0.125 = 1/8), numbers written as decimals also match when
//    equal after rounding to 6 decimal places (as math-verify does: 0.333333 =
//    1/3), irrational values within a relative 1e-9, expressions with variables
//    by evaluation at random points, sets and unordered answer lists
//    order-insensitively, tuples in order, `x = 5` against `5`, a ± b against
//    both values, 50% against 50 and 0.5.
//
// Work is bounded: answers over `max_chars` are refused, and parsing and
// evaluation count steps against `max_steps` and check `deadline`.
namespace microrl::reward {

struct MathLimits {
  size_t max_chars = 1000;
  int64_t max_steps = 200'000;
  absl::Time deadline = absl::InfiniteFuture();
};

struct Comparison {
  bool equal = false;
  // Why they differ or could not be compared ("" when equal): e.g.
  // "12 != 13", "cannot parse the answer: ...", "timeout".
  std::string reason;
  bool timed_out = false;
};

// Compares an answer with the reference (both already extracted, e.g. from
// \boxed{}). Never throws; every failure is a reason.
Comparison CompareAnswers(absl::string_view reference, absl::string_view answer,
                          const MathLimits& limits = {});

// The normalized LaTeX an answer is parsed from (exposed for tests and tools).
std::string NormalizeLatex(absl::string_view answer);

// Whether an answer reads as prose rather than mathematics once normalized: it
// has a word of three or more letters that is not a function, constant,
// Greek letter or unit in a text macro ("The result is 3" is prose; "x = 5",
// "\frac{1}{2}", "10\text{ cm}" are not).
bool LooksLikeProse(absl::string_view answer);

}  // namespace microrl::reward

#endif  // MICRORL_REWARD_SERVICE_MATH_ANSWER_H_
