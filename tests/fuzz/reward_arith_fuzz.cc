// Differential libFuzzer target for the reward's exact arithmetic: the input
// bytes choose a random integer/rational expression (sums, differences,
// products, quotients, integer powers, factorials, binomials, gcd/lcm, decimals,
// big literals), written in LaTeX in one of several ways. GMP computes its value
// directly (the oracle), and CompareAnswers must
//   - accept the value as equal to the expression (both ways) whenever every
//     intermediate value is well inside Rational::kMaxBits, and
//   - never accept the value plus one, or the value doubled, whatever the sizes
//     (no wrap-around, no floating-point rounding of exact values).
// Any mismatch aborts, so the fuzzer reports it; not only crashes count.
// Built and run by tests/fuzz/run_fuzz.sh reward_arith.
#include <gmpxx.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/time/clock.h"
#include "reward_service/math_answer.h"
#include "reward_service/math/rational.h"

namespace {

using microrl::reward::Rational;

class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t Next() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool Done() const { return pos_ >= size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

struct Expr {
  std::string latex;
  mpq_class value;
  bool atomic = false;  // needs no parentheses as an operand
};

int64_t Bits(const mpq_class& v) {
  const int64_t n = sgn(v) == 0 ? 0 : mpz_sizeinbase(v.get_num().get_mpz_t(), 2);
  const int64_t d = mpz_sizeinbase(v.get_den().get_mpz_t(), 2);
  return n > d ? n : d;
}

class Generator {
 public:
  explicit Generator(Bytes* bytes) : bytes_(*bytes) {}
  int64_t max_bits() const { return max_bits_; }

  Expr Generate(int depth) {
    Expr e = depth <= 0 || bytes_.Done() ? Leaf() : Node(depth);
    const int64_t bits = Bits(e.value);
    if (bits > max_bits_) max_bits_ = bits;
    return e;
  }

 private:
  static std::string Wrap(const Expr& e) {
    return e.atomic ? e.latex : "(" + e.latex + ")";
  }
  static std::string Str(const mpz_class& z) { return z.get_str(10); }

  Expr Leaf() {
    const uint8_t kind = bytes_.Next() % 8;
    if (kind == 0) {  // a big literal: up to 40 digits
      std::string digits = std::to_string(1 + bytes_.Next() % 9);
      for (int n = bytes_.Next() % 40; n > 0; --n)
        digits.push_back(static_cast<char>('0' + bytes_.Next() % 10));
      return {digits, mpq_class(mpz_class(digits, 10)), true};
    }
    if (kind == 1) {  // a decimal: 12.375
      const int whole = bytes_.Next() % 100;
      const int places = 1 + bytes_.Next() % 3;
      int fraction = 0, scale = 1;
      for (int k = 0; k < places; ++k) {
        fraction = fraction * 10 + bytes_.Next() % 10;
        scale *= 10;
      }
      std::string text = std::to_string(whole) + ".";
      std::string f = std::to_string(fraction);
      text += std::string(places - f.size(), '0') + f;
      mpq_class v(whole * scale + fraction, scale);
      v.canonicalize();
      return {text, v, true};
    }
    if (kind == 2) {  // a negative integer in parentheses
      const int n = 1 + bytes_.Next() % 50;
      return {"(-" + std::to_string(n) + ")", mpq_class(-n), true};
    }
    const int n = bytes_.Next() % 20;
    return {std::to_string(n), mpq_class(n), true};
  }

  Expr Node(int depth) {
    const uint8_t op = bytes_.Next() % 11;
    Expr a = Generate(depth - 1);
    if (op == 7) {  // power with a small integer exponent
      const int k = static_cast<int>(bytes_.Next() % 40) - 8;
      if (Bits(a.value) * (k < 0 ? -k : k) > 40000 || (sgn(a.value) == 0 && k < 0))
        return a;
      mpz_class num, den;
      mpz_pow_ui(num.get_mpz_t(), a.value.get_num().get_mpz_t(), k < 0 ? -k : k);
      mpz_pow_ui(den.get_mpz_t(), a.value.get_den().get_mpz_t(), k < 0 ? -k : k);
      mpq_class v = k < 0 ? mpq_class(den, num) : mpq_class(num, den);
      v.canonicalize();
      return {Wrap(a) + "^{" + std::to_string(k) + "}", v, false};
    }
    if (op == 8) {  // factorial of a small literal
      const int n = bytes_.Next() % 30;
      mpz_class f;
      mpz_fac_ui(f.get_mpz_t(), n);
      return {bytes_.Next() % 2 ? std::to_string(n) + "!" : "(" + std::to_string(n) + ")!",
              mpq_class(f), true};
    }
    if (op == 9) {  // binomial of small literals
      const int n = bytes_.Next() % 60, k = bytes_.Next() % 64;
      mpz_class b;
      if (k <= n) mpz_bin_uiui(b.get_mpz_t(), n, k);
      return {"\\binom{" + std::to_string(n) + "}{" + std::to_string(k) + "}",
              mpq_class(b), true};
    }
    Expr b = Generate(depth - 1);
    switch (op) {
      case 0:
      case 1:
        return {a.latex + " + " + Wrap(b), a.value + b.value, false};
      case 2:
        return {a.latex + " - " + Wrap(b), a.value - b.value, false};
      case 3:
      case 4: {
        static const char* kTimes[] = {" \\cdot ", " \\times ", "*", ""};
        const char* times = kTimes[bytes_.Next() % 4];
        std::string text = *times == '\0' ? "(" + a.latex + ")(" + b.latex + ")"
                                          : Wrap(a) + times + Wrap(b);
        return {text, a.value * b.value, false};
      }
      case 5:
      case 6: {
        if (sgn(b.value) == 0) return {a.latex + " + " + Wrap(b), a.value, false};
        mpq_class v = a.value / b.value;
        if (bytes_.Next() % 2)
          return {"\\frac{" + a.latex + "}{" + b.latex + "}", v, true};
        return {Wrap(a) + " / " + "(" + b.latex + ")", v, false};
      }
      default: {  // gcd / lcm of integers
        if (a.value.get_den() != 1 || b.value.get_den() != 1)
          return {a.latex + " + " + Wrap(b), a.value + b.value, false};
        mpz_class r;
        const bool gcd = op == 10 && bytes_.Next() % 2;
        if (gcd) {
          mpz_gcd(r.get_mpz_t(), a.value.get_num().get_mpz_t(), b.value.get_num().get_mpz_t());
        } else {
          mpz_lcm(r.get_mpz_t(), a.value.get_num().get_mpz_t(), b.value.get_num().get_mpz_t());
        }
        return {std::string(gcd ? "\\gcd" : "\\operatorname{lcm}") + "(" +
                    a.latex + ", " + b.latex + ")",
                mpq_class(abs(r)), true};
      }
    }
  }

  Bytes& bytes_;
  int64_t max_bits_ = 0;
};

std::string Render(const mpq_class& v) {
  if (v.get_den() == 1) return v.get_num().get_str(10);
  const mpz_class num = abs(v.get_num());
  return std::string(sgn(v) < 0 ? "-" : "") + "\\frac{" + num.get_str(10) +
         "}{" + v.get_den().get_str(10) + "}";
}

[[noreturn]] void Fail(const char* what, const std::string& expr,
                       const std::string& value, const std::string& reason) {
  std::fprintf(stderr,
               "reward_arith_fuzz: %s\n  expression: %s\n  value: %s\n"
               "  reason: %s\n",
               what, expr.c_str(), value.c_str(), reason.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes bytes(data, size);
  Generator generator(&bytes);
  const int depth = 1 + bytes.Next() % 6;
  const Expr e = generator.Generate(depth);
  microrl::reward::MathLimits limits;
  limits.max_chars = 1 << 20;
  limits.max_steps = 10'000'000;
  limits.deadline = absl::Now() + absl::Seconds(10);
  const std::string value = Render(e.value);
  // Equal both ways when every intermediate value is far from the limit.
  if (generator.max_bits() <= Rational::kMaxBits / 4) {
    for (bool swap : {false, true}) {
      const microrl::reward::Comparison c =
          swap ? microrl::reward::CompareAnswers(e.latex, value, limits)
               : microrl::reward::CompareAnswers(value, e.latex, limits);
      if (!c.equal && !c.timed_out) Fail("value not accepted", e.latex, value, c.reason);
    }
  }
  // Never equal to a different value.
  for (const mpq_class& wrong : {mpq_class(e.value + 1), mpq_class(e.value * 2)}) {
    if (wrong == e.value) continue;
    const std::string other = Render(wrong);
    for (bool swap : {false, true}) {
      const microrl::reward::Comparison c =
          swap ? microrl::reward::CompareAnswers(e.latex, other, limits)
               : microrl::reward::CompareAnswers(other, e.latex, limits);
      if (c.equal) Fail("a different value accepted", e.latex, other, "");
    }
  }
  return 0;
}
