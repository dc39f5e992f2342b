#ifndef MICRORL_REWARD_SERVICE_MATH_EVALUATE_H_
#define MICRORL_REWARD_SERVICE_MATH_EVALUATE_H_

#include <complex>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "reward_service/math/budget.h"
#include "reward_service/math/node.h"
#include "reward_service/math/rational.h"

// What a tree is worth: exactly (rationals) where it can be, else as a complex
// number at given values of its symbols; and the questions the comparer asks
// of a tree.
namespace microrl::reward::math {

using Complex = std::complex<double>;
// Values of the symbols.
using Env = std::map<std::string, Complex>;

// Whether a number in the tree was written with a decimal point or exponent.
bool HasDecimal(const Node& n);
// \sum_{k=a}^{b} body or \prod.
bool IsBigOperator(const Node& n);
// The free symbols of the tree (a big operator's index is bound).
void Symbols(const Node& n, std::set<std::string>* out);
// A single value (not a tuple, set, interval, matrix or relation).
bool IsScalar(const Node& n);
// The exact value of a tree without symbols, or nullopt; *too_large is set
// when a rational operation was refused for the size of its result (as
// opposed to an irrational or undefined value): such a value must not be
// compared in floating point, where 1/3^{20000} would equal 0.
std::optional<Rational> Exact(const Node& n, Budget& budget, bool* too_large);
// The value of a scalar tree with its symbols at `env`.
Complex Eval(const Node& n, const Env& env, Budget& budget);
// Equal within a relative `tolerance`.
bool Close(Complex a, Complex b, double tolerance);
// A decimal answer matches a value equal to it at 6 decimal places, as in
// math-verify (0.333333 = 1/3), and also within a relative 1e-4, so that tiny
// values do not all round to the same number (0.0000672 != 0.0000673).
bool DecimalMatch(double a, double b);
// DecimalMatch on exact values, rounded to `places`, without rounding error.
bool DecimalMatch(const Rational& a, const Rational& b, int places = 6);
// The decimal places two numbers are compared at: 6 (math-verify's
// precision), or fewer when one side is a decimal written with 4 or 5 places
// (0.3333 against 1/3, 2.6667 against 8/3). Fewer than 4 written places keep 6:
// 0.33 is not 1/3.
int RoundingPlaces(const Node& gold, const Node& pred);
// Whether the tree holds an infinity.
bool HasInfinity(const Node& n);

}  // namespace microrl::reward::math

#endif  // MICRORL_REWARD_SERVICE_MATH_EVALUATE_H_
