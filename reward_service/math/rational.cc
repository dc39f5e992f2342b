#include "reward_service/math/rational.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

namespace microrl::reward {
namespace {

int64_t Bits(const mpz_class& z) {
  return sgn(z) == 0 ? 0
                     : static_cast<int64_t>(mpz_sizeinbase(z.get_mpz_t(), 2));
}

mpz_class PowerOfTen(
    unsigned long exponent) {  // NOLINT(runtime/int): GMP's type
  mpz_class result;
  mpz_ui_pow_ui(result.get_mpz_t(), 10, exponent);
  return result;
}

// log2(n!) from lgamma: how large a factorial or binomial would be, before
// computing it.
double Log2Factorial(double n) { return std::lgamma(n + 1) / std::log(2.0); }

}  // namespace

std::optional<Rational> Rational::Checked(mpq_class value) {
  value.canonicalize();
  Rational r(std::move(value));
  if (r.bits() > kMaxBits) return std::nullopt;
  return r;
}

Rational Rational::Integer(int64_t value) {
  return Rational(
      mpq_class(mpz_class(static_cast<signed long>(value))));  // NOLINT
}

std::optional<Rational> Rational::Fraction(const mpz_class& p,
                                           const mpz_class& q) {
  if (sgn(q) == 0) return std::nullopt;
  if (Bits(p) > 2 * kMaxBits || Bits(q) > 2 * kMaxBits) return std::nullopt;
  return Checked(mpq_class(p, q));
}

std::optional<Rational> Rational::FromDecimal(absl::string_view text) {
  size_t i = 0;
  bool negative = false;
  if (i < text.size() && (text[i] == '-' || text[i] == '+'))
    negative = text[i++] == '-';
  std::string digits;
  size_t fraction_digits = 0;
  bool any = false;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]));
       ++i) {
    digits.push_back(text[i]);
    any = true;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]));
         ++i) {
      digits.push_back(text[i]);
      ++fraction_digits;
      any = true;
    }
  }
  if (!any) return std::nullopt;
  int64_t exponent = 0;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool negative_exponent = false;
    if (i < text.size() && (text[i] == '-' || text[i] == '+'))
      negative_exponent = text[i++] == '-';
    if (i == text.size()) return std::nullopt;
    for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]));
         ++i) {
      exponent = exponent * 10 + (text[i] - '0');
      if (exponent > 100'000) return std::nullopt;
    }
    if (negative_exponent) exponent = -exponent;
  }
  if (i != text.size()) return std::nullopt;
  // 10^k has 3.33k bits: refuse what cannot fit before building it.
  const int64_t scale = exponent - static_cast<int64_t>(fraction_digits);
  if (static_cast<int64_t>(digits.size()) > 3 * kMaxBits / 10 + 10 ||
      std::abs(scale) > 3 * kMaxBits / 10 + 10) {
    return std::nullopt;
  }
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size()));
  mpz_class num(digits.empty() ? std::string("0") : digits, 10);
  if (negative) num = -num;
  if (scale >= 0) return Fraction(num * PowerOfTen(scale), 1);
  return Fraction(num, PowerOfTen(-scale));
}

int64_t Rational::bits() const {
  return std::max(Bits(value_.get_num()), Bits(value_.get_den()));
}

double Rational::ToDouble() const {
  if (is_zero()) return 0;
  const int64_t magnitude = Bits(value_.get_num()) - Bits(value_.get_den());
  if (magnitude > 1025) {
    return sign() > 0 ? std::numeric_limits<double>::infinity()
                      : -std::numeric_limits<double>::infinity();
  }
  if (magnitude < -1080) return 0.0;
  return value_.get_d();
}

std::string Rational::ToString() const { return value_.get_str(10); }

Rational Rational::Negated() const { return Rational(mpq_class(-value_)); }
Rational Rational::Abs() const { return Rational(mpq_class(abs(value_))); }

std::optional<Rational> Rational::Plus(const Rational& other) const {
  return Checked(mpq_class(value_ + other.value_));
}

std::optional<Rational> Rational::Times(const Rational& other) const {
  return Checked(mpq_class(value_ * other.value_));
}

std::optional<Rational> Rational::Inverse() const {
  if (is_zero()) return std::nullopt;
  return Checked(mpq_class(1 / value_));
}

std::optional<Rational> Rational::Power(int64_t exponent) const {
  if (exponent < 0) {
    if (is_zero() || exponent == std::numeric_limits<int64_t>::min())
      return std::nullopt;
    std::optional<Rational> inverse = Inverse();
    if (!inverse) return std::nullopt;
    return inverse->Power(-exponent);
  }
  if (exponent == 0) return Integer(1);
  const mpz_class& num = value_.get_num();
  const mpz_class& den = value_.get_den();
  // 0, 1 and -1 stay small whatever the exponent.
  if (is_zero() || (den == 1 && abs(num) == 1)) {
    return Integer(sgn(num) < 0 && exponent % 2 == 1 ? -1 : is_zero() ? 0 : 1);
  }
  // |p|^e needs more than (bits(p) - 1) * e bits: check before computing.
  if (exponent > kMaxBits || (bits() - 1) * exponent > kMaxBits)
    return std::nullopt;
  mpz_class p, q;
  const auto e = static_cast<unsigned long>(exponent);  // NOLINT(runtime/int)
  mpz_pow_ui(p.get_mpz_t(), num.get_mpz_t(), e);
  mpz_pow_ui(q.get_mpz_t(), den.get_mpz_t(), e);
  return Fraction(p, q);
}

std::optional<Rational> Rational::Root(int64_t n) const {
  if (n < 1 || n > kMaxBits) return std::nullopt;
  if (n == 1 || is_zero()) return *this;
  const bool negative = sign() < 0;
  if (negative && n % 2 == 0) return std::nullopt;
  mpz_class p, q;
  const mpz_class num = abs(value_.get_num());
  const auto k = static_cast<unsigned long>(n);  // NOLINT(runtime/int)
  if (mpz_root(p.get_mpz_t(), num.get_mpz_t(), k) == 0) return std::nullopt;
  if (mpz_root(q.get_mpz_t(), value_.get_den().get_mpz_t(), k) == 0)
    return std::nullopt;
  if (negative) p = -p;
  return Fraction(p, q);
}

std::optional<Rational> Rational::Factorial() const {
  if (!is_integer() || sign() < 0 || bits() > 32) return std::nullopt;
  const double n = value_.get_d();
  if (Log2Factorial(n) > kMaxBits) return std::nullopt;
  mpz_class result;
  mpz_fac_ui(result.get_mpz_t(), static_cast<unsigned long>(n));  // NOLINT
  return Fraction(result, 1);
}

std::optional<Rational> Rational::Binomial(const Rational& n,
                                           const Rational& k) {
  if (!n.is_integer() || !k.is_integer() || n.sign() < 0) return std::nullopt;
  if (k.sign() < 0 || k.value_ > n.value_) return Integer(0);
  mpz_class kk = k.value_.get_num();
  const mpz_class& nn = n.value_.get_num();
  if (nn - kk < kk) kk = nn - kk;
  // C(n, k) >= (n/k)^k >= 2^k for n >= 2k: a large k means a large result.
  if (Bits(kk) > 20 || kk.get_ui() > static_cast<uint64_t>(kMaxBits))
    return std::nullopt;
  const double nd = nn.get_d(), kd = kk.get_d();
  if (Log2Factorial(nd) - Log2Factorial(kd) - Log2Factorial(nd - kd) >
      kMaxBits + 2) {
    return std::nullopt;
  }
  mpz_class result;
  mpz_bin_ui(result.get_mpz_t(), nn.get_mpz_t(), kk.get_ui());
  return Fraction(result, 1);
}

std::optional<Rational> Rational::Gcd(const Rational& a, const Rational& b) {
  if (!a.is_integer() || !b.is_integer()) return std::nullopt;
  return Fraction(gcd(a.value_.get_num(), b.value_.get_num()), 1);
}

std::optional<Rational> Rational::Lcm(const Rational& a, const Rational& b) {
  if (!a.is_integer() || !b.is_integer()) return std::nullopt;
  return Fraction(lcm(a.value_.get_num(), b.value_.get_num()), 1);
}

}  // namespace microrl::reward
