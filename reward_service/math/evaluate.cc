#include "reward_service/math/evaluate.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace microrl::reward::math {

bool HasDecimal(const Node& n) {
  if (n.kind == Kind::kNumber) return n.decimal;
  for (const NodeP& a : n.args) {
    if (HasDecimal(*a)) return true;
  }
  return false;
}

bool IsBigOperator(const Node& n) {  // \sum_{k=a}^{b} body, \prod
  return n.kind == Kind::kFunction && (n.name == "sum" || n.name == "prod") &&
         n.args.size() == 3;
}

void Symbols(const Node& n, std::set<std::string>* out) {
  if (n.kind == Kind::kSymbol) out->insert(n.name);
  if (IsBigOperator(n) && n.args[0]->kind == Kind::kRelation &&
      n.args[0]->args[0]->kind == Kind::kSymbol) {
    // The bound variable is not free.
    std::set<std::string> inner;
    Symbols(*n.args[0]->args[1], &inner);
    Symbols(*n.args[1], &inner);
    std::set<std::string> body;
    Symbols(*n.args[2], &body);
    body.erase(n.args[0]->args[0]->name);
    out->insert(inner.begin(), inner.end());
    out->insert(body.begin(), body.end());
    return;
  }
  for (const NodeP& a : n.args) Symbols(*a, out);
}

bool IsScalar(const Node& n) {
  if (IsBigOperator(n)) return IsScalar(*n.args[1]) && IsScalar(*n.args[2]);
  switch (n.kind) {
    case Kind::kTuple:
    case Kind::kSet:
    case Kind::kList:
    case Kind::kInterval:
    case Kind::kUnion:
    case Kind::kMatrix:
    case Kind::kRelation:
    case Kind::kText:
    case Kind::kPlusMinus:
      return false;
    default:
      for (const NodeP& a : n.args) {
        if (!IsScalar(*a)) return false;
      }
      return true;
  }
}

// Exact value of a scalar without symbols, if it is rational and small enough
// to compute (see Rational::kMaxBits); nullopt otherwise. *too_large is set
// when a rational operation was refused for the size of its result (as
// opposed to an irrational or undefined value): such a value must not be
// compared in floating point, where 1/3^{20000} would equal 0.
std::optional<Rational> Exact(const Node& n, Budget& budget, bool* too_large) {
  budget.Step();
  auto arg = [&](size_t i) { return Exact(*n.args[i], budget, too_large); };
  // A rational operation's result: nullopt from it means "too large".
  auto sized = [&](std::optional<Rational> r) {
    if (!r) *too_large = true;
    return r;
  };
  switch (n.kind) {
    case Kind::kNumber:
      return n.value;
    case Kind::kAdd:
    case Kind::kMul: {
      std::optional<Rational> acc =
          Rational::Integer(n.kind == Kind::kAdd ? 0 : 1);
      for (size_t i = 0; i < n.args.size(); ++i) {
        std::optional<Rational> v = arg(i);
        if (!v) return std::nullopt;
        budget.Step(1 + v->bits() / 64);
        acc = sized(n.kind == Kind::kAdd ? acc->Plus(*v) : acc->Times(*v));
        if (!acc) return std::nullopt;
      }
      return acc;
    }
    case Kind::kNeg:
    case Kind::kInv:
    case Kind::kPercent:
    case Kind::kAbs: {
      std::optional<Rational> v = arg(0);
      if (!v) return std::nullopt;
      if (n.kind == Kind::kNeg) return v->Negated();
      // nullopt for 1/0: undefined, not too large.
      if (n.kind == Kind::kInv) return v->Inverse();
      if (n.kind == Kind::kAbs) return v->Abs();
      return sized(v->Times(*Rational::Fraction(1, 100)));  // kPercent
    }
    case Kind::kFactorial: {
      std::optional<Rational> v = arg(0);
      if (!v || !v->is_integer() || v->sign() < 0) return std::nullopt;
      budget.Step(64);
      return sized(v->Factorial());
    }
    case Kind::kFunction: {
      if (n.name == "binom" && n.args.size() == 2) {
        std::optional<Rational> a = arg(0), b = arg(1);
        if (!a || !b || !a->is_integer() || !b->is_integer() || a->sign() < 0)
          return std::nullopt;
        budget.Step(64);
        return sized(Rational::Binomial(*a, *b));
      }
      if ((n.name == "gcd" || n.name == "lcm") && n.args.size() >= 2) {
        std::optional<Rational> acc = arg(0);
        for (size_t i = 1; i < n.args.size() && acc; ++i) {
          std::optional<Rational> v = arg(i);
          if (!v || !v->is_integer() || !acc->is_integer()) return std::nullopt;
          acc = sized(n.name == "gcd" ? Rational::Gcd(*acc, *v)
                                      : Rational::Lcm(*acc, *v));
        }
        if (!acc) return std::nullopt;
        return acc->Abs();
      }
      return std::nullopt;
    }
    case Kind::kPow: {
      std::optional<Rational> base = arg(0);
      std::optional<Rational> exponent = arg(1);
      if (!base || !exponent) return std::nullopt;
      // base^(p/q) = (q-th root of base)^p when that root is rational.
      const mpz_class& q = exponent->value().get_den();
      const mpz_class& p = exponent->value().get_num();
      if (!q.fits_slong_p() || !p.fits_slong_p()) {
        // An exponent too large for 64 bits on a base other than 0, 1, -1.
        if (base->bits() > 1 || exponent->sign() < 0) *too_large = true;
        return std::nullopt;
      }
      std::optional<Rational> root = base->Root(q.get_si());
      if (!root) return std::nullopt;  // irrational (or undefined)
      if (root->is_zero() && p.get_si() < 0) return std::nullopt;
      budget.Step(1 + root->bits() / 64);
      return sized(root->Power(p.get_si()));
    }
    default:
      return std::nullopt;
  }
}

namespace {
double Factorial(double x) { return std::tgamma(x + 1); }
}  // namespace

Complex Eval(const Node& n, const Env& env, Budget& budget) {
  budget.Step();
  const double nan = std::nan("");
  switch (n.kind) {
    case Kind::kNumber:
      return n.value.ToDouble();
    case Kind::kSymbol: {
      const auto it = env.find(n.name);
      return it == env.end() ? Complex(nan, 0) : it->second;
    }
    case Kind::kConstant:
      if (n.name == "pi") return M_PI;
      if (n.name == "e") return M_E;
      if (n.name == "i") return Complex(0, 1);
      return std::numeric_limits<double>::infinity();
    case Kind::kAdd: {
      Complex sum = 0;
      for (const NodeP& a : n.args) sum += Eval(*a, env, budget);
      return sum;
    }
    case Kind::kMul: {
      Complex product = 1;
      for (const NodeP& a : n.args) product *= Eval(*a, env, budget);
      return product;
    }
    case Kind::kNeg:
      return -Eval(*n.args[0], env, budget);
    case Kind::kInv: {
      const Complex v = Eval(*n.args[0], env, budget);
      return v == Complex(0, 0) ? Complex(nan, 0) : 1.0 / v;
    }
    case Kind::kPercent:
      return Eval(*n.args[0], env, budget) / 100.0;
    case Kind::kAbs:
      return std::abs(Eval(*n.args[0], env, budget));
    case Kind::kFactorial: {
      const Complex v = Eval(*n.args[0], env, budget);
      return v.imag() != 0 || v.real() < 0 || v.real() > 170
                 ? Complex(nan, 0)
                 : Complex(Factorial(v.real()), 0);
    }
    case Kind::kPow: {
      const Complex base = Eval(*n.args[0], env, budget);
      const Complex exponent = Eval(*n.args[1], env, budget);
      // Real odd roots of negative numbers stay real: (-8)^(1/3) = -2.
      if (base.imag() == 0 && exponent.imag() == 0 && base.real() < 0) {
        const double e = exponent.real();
        const double inverse = 1.0 / e;
        if (std::abs(inverse - std::round(inverse)) < 1e-12 &&
            std::fmod(std::round(inverse), 2) != 0) {
          return -std::pow(-base.real(), e);
        }
        if (std::abs(e - std::round(e)) < 1e-12)
          return std::pow(base.real(), std::round(e));
      }
      if (base.imag() == 0 && exponent.imag() == 0 && base.real() >= 0) {
        return std::pow(base.real(), exponent.real());
      }
      return std::pow(base, exponent);
    }
    case Kind::kFunction: {
      std::vector<Complex> a;
      for (const NodeP& arg : n.args) a.push_back(Eval(*arg, env, budget));
      const std::string& f = n.name;
      if (f == "sin") return std::sin(a[0]);
      if (f == "cos") return std::cos(a[0]);
      if (f == "tan") return std::tan(a[0]);
      if (f == "cot") return 1.0 / std::tan(a[0]);
      if (f == "sec") return 1.0 / std::cos(a[0]);
      if (f == "csc") return 1.0 / std::sin(a[0]);
      if (f == "arcsin") return std::asin(a[0]);
      if (f == "arccos") return std::acos(a[0]);
      if (f == "arctan") return std::atan(a[0]);
      if (f == "sinh") return std::sinh(a[0]);
      if (f == "cosh") return std::cosh(a[0]);
      if (f == "tanh") return std::tanh(a[0]);
      if (f == "exp") return std::exp(a[0]);
      if (f == "ln") return std::log(a[0]);
      if (f == "log10") return std::log10(a[0]);
      if (f == "log")
        return a.size() > 1 ? std::log(a[0]) / std::log(a[1]) : std::log(a[0]);
      if ((f == "sum" || f == "prod") && n.args.size() == 3) {
        // Numeric bounds: add (multiply) the body over the bound variable.
        const Node& lower = *n.args[0];
        if (lower.kind != Kind::kRelation ||
            lower.args[0]->kind != Kind::kSymbol)
          return nan;
        const double from = Eval(*lower.args[1], env, budget).real();
        const double to = a[1].real();
        if (!(std::abs(from - std::round(from)) < 1e-9 &&
              std::abs(to - std::round(to)) < 1e-9 && to - from < 100000))
          return nan;
        Env inner = env;
        Complex total = f == "sum" ? 0.0 : 1.0;
        for (double k = std::round(from); k <= std::round(to); ++k) {
          inner[lower.args[0]->name] = k;
          const Complex v = Eval(*n.args[2], inner, budget);
          total = f == "sum" ? total + v : total * v;
        }
        return total;
      }
      if (f == "binom" && a.size() == 2) {
        const double nn = a[0].real(), k = a[1].real();
        return Factorial(nn) / (Factorial(k) * Factorial(nn - k));
      }
      if ((f == "max" || f == "min") && !a.empty()) {
        double best = a[0].real();
        for (const Complex& v : a)
          best =
              f == "max" ? std::max(best, v.real()) : std::min(best, v.real());
        return best;
      }
      if (f == "gcd" || f == "lcm" || f == "det") return nan;
      return nan;
    }
    default:
      return nan;
  }
}

bool Close(Complex a, Complex b, double tolerance) {
  if (std::isinf(a.real()) || std::isinf(b.real())) {
    return std::isinf(a.real()) && std::isinf(b.real()) &&
           (a.real() > 0) == (b.real() > 0);
  }
  const double scale = std::max({1.0, std::abs(a), std::abs(b)});
  return std::abs(a - b) <= tolerance * scale;
}

// A decimal answer matches a value equal to it at 6 decimal places, as in
// math-verify (0.333333 = 1/3), and also within a relative 1e-4, so that tiny
// values do not all round to the same number (0.0000672 != 0.0000673).
bool DecimalMatch(double a, double b) {
  const bool rounded = std::round(a * 1e6) == std::round(b * 1e6);
  return rounded &&
         std::abs(a - b) <= 1e-4 * std::max(std::abs(a), std::abs(b));
}

// DecimalMatch on exact values: equal after rounding to 6 decimal places and
// within a relative 1e-4, computed without rounding error (in doubles, two
// values near 1e43 that differ by 1 would agree at "6 decimal places").
bool DecimalMatch(const Rational& a, const Rational& b, int places) {
  mpz_class scale;
  mpz_ui_pow_ui(scale.get_mpz_t(), 10,
                static_cast<unsigned long>(places));  // NOLINT
  const auto rounded = [&scale](const mpq_class& v) {
    const mpq_class scaled = v * scale + mpq_class(1, 2);
    mpz_class floor;
    mpz_fdiv_q(floor.get_mpz_t(), scaled.get_num().get_mpz_t(),
               scaled.get_den().get_mpz_t());
    return floor;
  };
  if (rounded(a.value()) != rounded(b.value())) return false;
  const mpq_class difference = abs(a.value() - b.value());
  const mpq_class magnitude = std::max(abs(a.value()), abs(b.value()));
  return difference * 10000 <= magnitude;
}

// The decimal places two numbers are compared at: 6 (math-verify's
// precision), or fewer when one side is a decimal written with 4 or 5 places
// (0.3333 against 1/3, 2.6667 against 8/3). Fewer than 4 written places keep 6:
// 0.33 is not 1/3.
int RoundingPlaces(const Node& gold, const Node& pred) {
  int places = 6;
  for (const Node* side : {&gold, &pred}) {
    const Node& n = side->kind == Kind::kNeg ? *side->args[0] : *side;
    if (n.kind == Kind::kNumber && n.decimal && n.places >= 4 && n.places < 6)
      places = std::min(places, n.places);
  }
  return places;
}

bool HasInfinity(const Node& n) {
  if (n.kind == Kind::kConstant && n.name == "inf") return true;
  for (const NodeP& a : n.args) {
    if (HasInfinity(*a)) return true;
  }
  return false;
}

}  // namespace microrl::reward::math
