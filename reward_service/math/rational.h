#ifndef MICRORL_REWARD_SERVICE_MATH_RATIONAL_H_
#define MICRORL_REWARD_SERVICE_MATH_RATIONAL_H_

#include <gmpxx.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

// Exact rational arithmetic for answer checking, on GMP: no operation wraps.
// A result whose numerator or denominator would need more than kMaxBits bits is
// not computed; the operation returns nullopt ("too large"), and callers fall
// back to floating point or report the answer as too large to compare. Every
// function checks the size of its result before doing the work, so a hostile
// answer (2^{10^9}, 10^{6}!) costs nothing. Values are immutable; thread-safe.
namespace microrl::reward {

class Rational {
 public:
  // About 4,900 decimal digits: far beyond any contest answer, small enough
  // that every operation below takes microseconds.
  static constexpr int64_t kMaxBits = 16384;

  Rational() = default;  // 0
  static Rational Integer(int64_t value);
  // p/q; nullopt when q is 0 or a part is too large.
  static std::optional<Rational> Fraction(const mpz_class& p,
                                          const mpz_class& q);
  // "123", "-4.50", "1.5e-3", ".25": exact; nullopt if malformed or too large.
  static std::optional<Rational> FromDecimal(absl::string_view text);

  const mpq_class& value() const { return value_; }
  bool is_integer() const { return value_.get_den() == 1; }
  bool is_zero() const { return sgn(value_) == 0; }
  int sign() const { return sgn(value_); }
  // Bits of the larger of numerator and denominator.
  int64_t bits() const;
  // Nearest double; +-infinity when out of range, never undefined.
  double ToDouble() const;
  // "p/q" or "p" in decimal.
  std::string ToString() const;

  friend bool operator==(const Rational& a, const Rational& b) {
    return a.value_ == b.value_;
  }
  friend bool operator<(const Rational& a, const Rational& b) {
    return a.value_ < b.value_;
  }

  Rational Negated() const;
  Rational Abs() const;
  std::optional<Rational> Plus(const Rational& other) const;
  std::optional<Rational> Times(const Rational& other) const;
  std::optional<Rational> Inverse() const;  // nullopt for 0
  // this^exponent for an integer exponent (negative: the inverse's power).
  std::optional<Rational> Power(int64_t exponent) const;
  // The exact n-th root (n >= 1) when it is rational: sqrt(9/4) = 3/2, the
  // odd root of a negative number is negative; nullopt otherwise.
  std::optional<Rational> Root(int64_t n) const;

  // Integer functions (nullopt for non-integers, negatives where undefined, or
  // results over kMaxBits).
  std::optional<Rational> Factorial() const;
  static std::optional<Rational> Binomial(const Rational& n, const Rational& k);
  static std::optional<Rational> Gcd(const Rational& a, const Rational& b);
  static std::optional<Rational> Lcm(const Rational& a, const Rational& b);

 private:
  explicit Rational(mpq_class value) : value_(std::move(value)) {}
  static std::optional<Rational> Checked(mpq_class value);

  mpq_class value_;  // canonical (lowest terms, positive denominator)
};

}  // namespace microrl::reward

#endif  // MICRORL_REWARD_SERVICE_MATH_RATIONAL_H_
