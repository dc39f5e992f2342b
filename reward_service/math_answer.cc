#include "reward_service/math_answer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <complex>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "reward_service/extraction.h"

namespace microrl::reward {
namespace {

using Complex = std::complex<double>;

// ------------------------------------------------------------------ budget
struct TooComplex {
  std::string why;
};
struct TimedOut {};

class Budget {
 public:
  Budget(int64_t steps, absl::Time deadline)
      : steps_(steps), deadline_(deadline) {}
  void Step(int64_t n = 1) {
    steps_ -= n;
    if (steps_ < 0)
      throw TooComplex{"the answer needs too much work to compare"};
    if ((++ticks_ & 255) == 0 && absl::Now() > deadline_) throw TimedOut{};
  }

 private:
  int64_t steps_;
  absl::Time deadline_;
  int64_t ticks_ = 0;
};

// ------------------------------------------------------------------ rationals
using Int = __int128;

Int Gcd(Int a, Int b) {
  if (a < 0) a = -a;
  if (b < 0) b = -b;
  while (b != 0) {
    const Int t = a % b;
    a = b;
    b = t;
  }
  return a;
}

constexpr Int kLimit = static_cast<Int>(1)
                       << 100;  // keep products within 128 bits

// An exact rational, or invalid after an overflow.
struct Rational {
  Int num = 0;
  Int den = 1;
  bool ok = true;

  static Rational Of(Int n, Int d = 1) {
    Rational r{n, d, true};
    r.Normalize();
    return r;
  }
  void Normalize() {
    if (!ok) return;
    if (den == 0) {
      ok = false;
      return;
    }
    if (den < 0) {
      num = -num;
      den = -den;
    }
    const Int g = Gcd(num, den);
    if (g > 1) {
      num /= g;
      den /= g;
    }
    if (num > kLimit || num < -kLimit || den > kLimit) ok = false;
  }
  double ToDouble() const {
    return static_cast<double>(num) / static_cast<double>(den);
  }
};

Rational Add(const Rational& a, const Rational& b) {
  if (!a.ok || !b.ok) return {0, 1, false};
  Rational r{a.num * b.den + b.num * a.den, a.den * b.den, true};
  r.Normalize();
  return r;
}
Rational Mul(const Rational& a, const Rational& b) {
  if (!a.ok || !b.ok) return {0, 1, false};
  const Int g1 = Gcd(a.num, b.den), g2 = Gcd(b.num, a.den);
  Rational r{(a.num / (g1 == 0 ? 1 : g1)) * (b.num / (g2 == 0 ? 1 : g2)),
             (a.den / (g2 == 0 ? 1 : g2)) * (b.den / (g1 == 0 ? 1 : g1)), true};
  r.Normalize();
  return r;
}
Rational Inverse(const Rational& a) {
  if (!a.ok || a.num == 0) return {0, 1, false};
  Rational r{a.den, a.num, true};
  r.Normalize();
  return r;
}

// Exact integer square root of a non-negative integer, if it is a perfect
// square.
std::optional<Int> ExactSqrt(Int n) {
  if (n < 0) return std::nullopt;
  Int r = static_cast<Int>(std::sqrt(static_cast<double>(n)));
  while (r > 0 && r * r > n) --r;
  while ((r + 1) * (r + 1) <= n) ++r;
  if (r * r == n) return r;
  return std::nullopt;
}

std::string IntToString(Int v) {
  if (v == 0) return "0";
  const bool negative = v < 0;
  std::string digits;
  while (v != 0) {
    int d = static_cast<int>(v % 10);
    digits.push_back(static_cast<char>('0' + (d < 0 ? -d : d)));
    v /= 10;
  }
  if (negative) digits.push_back('-');
  std::reverse(digits.begin(), digits.end());
  return digits;
}

// ------------------------------------------------------------------ AST
enum class Kind {
  kNumber,     // value (exact), decimal flag
  kSymbol,     // name
  kConstant,   // name: pi, e, i, inf
  kAdd,        // args
  kMul,        // args
  kPow,        // base, exponent
  kNeg,        // arg
  kInv,        // 1 / arg
  kFunction,   // name, args
  kFactorial,  // arg
  kPercent,    // arg (x%)
  kAbs,        // arg
  kPlusMinus,  // a ± b (args: a, b; name "mp" for ∓)
  kTuple,      // args, in order
  kSet,        // args, unordered
  kList,       // top-level comma list: unordered answers
  kInterval,   // args: a, b; left_closed, right_closed
  kUnion,      // args
  kMatrix,     // args row-major; rows, cols
  kRelation,   // name: = < > <= >= !=, args: lhs, rhs
  kText,       // name: normalized text
};

struct Node;
using NodeP = std::shared_ptr<Node>;
struct Node {
  Kind kind;
  Rational value;
  bool decimal = false;  // a number written with a decimal point or exponent
  std::string name;
  std::vector<NodeP> args;
  bool left_closed = false, right_closed = false;
  int rows = 0, cols = 0;
};

NodeP Make(Kind kind, std::vector<NodeP> args = {}, std::string name = "") {
  auto node = std::make_shared<Node>();
  node->kind = kind;
  node->args = std::move(args);
  node->name = std::move(name);
  return node;
}
NodeP Number(Rational value, bool decimal = false) {
  auto node = Make(Kind::kNumber);
  node->value = value;
  node->decimal = decimal;
  return node;
}

// ------------------------------------------------------------------
// normalization
std::string ReplaceAll(std::string s, absl::string_view from,
                       absl::string_view to) {
  return absl::StrReplaceAll(s, {{from, to}});
}

// Content of the brace group at s[open] == '{'; sets *end past it.
std::optional<std::string> Group(const std::string& s, size_t open,
                                 size_t* end) {
  if (open >= s.size() || s[open] != '{') return std::nullopt;
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      ++i;
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) {
      *end = i + 1;
      return s.substr(open + 1, i - open - 1);
    }
  }
  return std::nullopt;
}

const std::set<std::string>& UnitWords() {
  static const auto* units = new std::set<std::string>{"cm",
                                                       "mm",
                                                       "m",
                                                       "km",
                                                       "in",
                                                       "inch",
                                                       "inches",
                                                       "ft",
                                                       "foot",
                                                       "feet",
                                                       "yd",
                                                       "yard",
                                                       "yards",
                                                       "mi",
                                                       "mile",
                                                       "miles",
                                                       "meter",
                                                       "meters",
                                                       "metre",
                                                       "metres",
                                                       "centimeter",
                                                       "centimeters",
                                                       "kilometer",
                                                       "kilometers",
                                                       "millimeter",
                                                       "millimeters",
                                                       "unit",
                                                       "units",
                                                       "square",
                                                       "sq",
                                                       "cubic",
                                                       "degree",
                                                       "degrees",
                                                       "deg",
                                                       "radian",
                                                       "radians",
                                                       "dollar",
                                                       "dollars",
                                                       "cent",
                                                       "cents",
                                                       "hour",
                                                       "hours",
                                                       "hr",
                                                       "hrs",
                                                       "minute",
                                                       "minutes",
                                                       "min",
                                                       "second",
                                                       "seconds",
                                                       "sec",
                                                       "s",
                                                       "day",
                                                       "days",
                                                       "week",
                                                       "weeks",
                                                       "month",
                                                       "months",
                                                       "year",
                                                       "years",
                                                       "mph",
                                                       "kg",
                                                       "g",
                                                       "gram",
                                                       "grams",
                                                       "kilogram",
                                                       "kilograms",
                                                       "pound",
                                                       "pounds",
                                                       "lb",
                                                       "lbs",
                                                       "ounce",
                                                       "ounces",
                                                       "oz",
                                                       "liter",
                                                       "liters",
                                                       "litre",
                                                       "ml",
                                                       "l",
                                                       "gallon",
                                                       "gallons",
                                                       "mile per hour",
                                                       "miles per hour",
                                                       "per",
                                                       "and",
                                                       "of",
                                                       "mathrm",
                                                       "p.m.",
                                                       "a.m.",
                                                       "pm",
                                                       "am",
                                                       "percent",
                                                       "points",
                                                       "point"};
  return *units;
}

bool IsUnitText(absl::string_view text) {
  std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  t = ReplaceAll(t, "^2", "");
  t = ReplaceAll(t, "^3", "");
  t = ReplaceAll(t, "^{2}", "");
  t = ReplaceAll(t, "^{3}", "");
  t = ReplaceAll(t, "\\", "");
  if (t.empty()) return true;
  size_t start = 0;
  while (start < t.size()) {
    while (start < t.size() &&
           (t[start] == ' ' || t[start] == '/' || t[start] == '.'))
      ++start;
    size_t end = start;
    while (end < t.size() && t[end] != ' ' && t[end] != '/') ++end;
    if (end > start && UnitWords().count(t.substr(start, end - start)) == 0 &&
        UnitWords().count(ReplaceAll(t.substr(start, end - start), ".", "")) ==
            0) {
      return false;
    }
    start = end;
  }
  return true;
}

// \text{..}, \mathrm{..}, ...: drop unit words (and a following ^2/^3), keep
// the rest of the text as plain characters.
std::string UnwrapTextCommands(std::string s) {
  static const char* kCommands[] = {"\\text",   "\\textbf",     "\\textit",
                                    "\\mathrm", "\\mathbf",     "\\mathit",
                                    "\\mbox",   "\\textrm",     "\\textnormal",
                                    "\\mathsf", "\\boldsymbol", "\\bm"};
  for (int guard = 0; guard < 100; ++guard) {
    size_t best = std::string::npos;
    size_t best_len = 0;
    for (const char* command : kCommands) {
      const size_t at = s.find(command);
      const size_t len = std::string(command).size();
      if (at != std::string::npos && at + len < s.size() &&
          s[at + len] == '{' && (best == std::string::npos || at < best)) {
        best = at;
        best_len = len;
      }
    }
    if (best == std::string::npos) break;
    size_t end = 0;
    std::optional<std::string> content = Group(s, best + best_len, &end);
    if (!content) break;
    std::string replacement = *content;
    const bool has_digits = std::any_of(
        content->begin(), content->end(),
        [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    const bool whole = best == 0 && end == s.size();
    if (!whole && !has_digits && IsUnitText(*content)) {
      replacement = "";
      for (const char* power : {"^{2}", "^{3}", "^2", "^3"}) {
        if (s.compare(end, std::string(power).size(), power) == 0) {
          end += std::string(power).size();
          break;
        }
      }
    }
    s = s.substr(0, best) + replacement + s.substr(end);
  }
  return s;
}

bool IsThousandsNumber(const std::string& s) {
  // -?d{1,3}(,ddd)+(.d+)?
  size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  size_t digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
    ++i, ++digits;
  if (digits < 1 || digits > 3) return false;
  int groups = 0;
  while (i < s.size() && s[i] == ',') {
    ++i;
    for (int k = 0; k < 3; ++k, ++i) {
      if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i])))
        return false;
    }
    ++groups;
  }
  if (groups == 0) return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (i >= s.size()) return false;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  }
  return i == s.size();
}

}  // namespace

std::string NormalizeLatex(absl::string_view answer) {
  std::string s = StripMathDelimiters(answer);
  // Unicode math symbols.
  static const std::vector<std::pair<std::string, std::string>> kUnicode = {
      {"\xE2\x88\x92", "-"},           {"\xC3\x97", "\\times "},
      {"\xC3\xB7", "\\div "},          {"\xC2\xB7", "\\cdot "},
      {"\xE2\x8B\x85", "\\cdot "},     {"\xE2\x88\x9A", "\\sqrt"},
      {"\xCF\x80", "\\pi "},           {"\xE2\x88\x9E", "\\infty "},
      {"\xE2\x89\xA4", "\\le "},       {"\xE2\x89\xA5", "\\ge "},
      {"\xE2\x89\xA0", "\\ne "},       {"\xE2\x88\xAA", "\\cup "},
      {"\xC2\xB1", "\\pm "},           {"\xE2\x88\x93", "\\mp "},
      {"\xE2\x88\x85", "\\emptyset "}, {"\xC2\xB0", ""},
      {"\xE2\x80\x89", " "},           {"\xC2\xA0", " "}};
  for (const auto& [from, to] : kUnicode) s = ReplaceAll(s, from, to);
  s = UnwrapTextCommands(s);
  // Sizing, spacing and style commands; \left. and \right. vanish entirely.
  s = ReplaceAll(s, "\\left.", "");
  s = ReplaceAll(s, "\\right.", "");
  for (const char* command :
       {"\\left",      "\\right",  "\\bigl",  "\\bigr",  "\\Bigl",
        "\\Bigr",      "\\biggl",  "\\biggr", "\\Biggl", "\\Biggr",
        "\\big",       "\\Big",    "\\bigg",  "\\Bigg",  "\\displaystyle",
        "\\textstyle", "\\limits", "\\qquad", "\\quad",  "\\!",
        "\\,",         "\\;",      "\\:",     "\\ "}) {
    for (size_t at = s.find(command); at != std::string::npos;
         at = s.find(command, at)) {
      const size_t len = std::string(command).size();
      // Not the second half of a "\\" line break.
      if (at > 0 && s[at - 1] == '\\') {
        at += len;
        continue;
      }
      // Only whole command names (\left but not \leftarrow).
      if (std::isalpha(static_cast<unsigned char>(command[len - 1])) &&
          at + len < s.size() &&
          std::isalpha(static_cast<unsigned char>(s[at + len]))) {
        at += len;
        continue;
      }
      s.erase(at, len);
    }
  }
  s = ReplaceAll(s, "~", " ");
  s = ReplaceAll(s, "\\dfrac", "\\frac");
  s = ReplaceAll(s, "\\tfrac", "\\frac");
  s = ReplaceAll(s, "\\cfrac", "\\frac");
  s = ReplaceAll(s, "\\dbinom", "\\binom");
  s = ReplaceAll(s, "\\tbinom", "\\binom");
  // Degrees.
  for (const char* degree :
       {"^{\\circ}", "^\\circ", "\\circ", "\\degree", "^{o}"}) {
    s = ReplaceAll(s, degree, "");
  }
  // Currency and percent.
  s = ReplaceAll(s, "\\$", "");
  s = ReplaceAll(s, "$", "");
  s = ReplaceAll(s, "\\%", "%");
  // Thousands separators in a lone number: 1,000 / 1{,}000.
  s = ReplaceAll(s, "{,}", ",");
  std::string compact;
  for (char c : s) {
    if (c != ' ') compact.push_back(c);
  }
  if (IsThousandsNumber(compact)) s = ReplaceAll(compact, ",", "");
  s = std::string(absl::StripAsciiWhitespace(s));
  // A trailing period ends a sentence, not a number.
  while (!s.empty() && (s.back() == '.' || s.back() == ' ')) s.pop_back();
  return s;
}

namespace {

// ------------------------------------------------------------------ lexer
enum class Tok { kNumber, kIdent, kCommand, kPunct, kEnd };
struct Token {
  Tok type;
  std::string text;
};

std::vector<Token> Lex(const std::string& s, Budget& budget) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    budget.Step();
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) ||
        (c == '.' && i + 1 < s.size() &&
         std::isdigit(static_cast<unsigned char>(s[i + 1])))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j])))
        ++j;
      if (j < s.size() && s[j] == '.' && j + 1 < s.size() &&
          std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j])))
          ++j;
      } else if (j < s.size() && s[j] == '.' && j > i &&
                 (j + 1 == s.size() ||
                  !std::isalpha(static_cast<unsigned char>(s[j + 1])))) {
        ++j;  // "5." is 5
      }
      // Scientific notation written plainly: 1.5e-3.
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          while (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k])))
            ++k;
          j = k;
        }
      }
      out.push_back({Tok::kNumber, s.substr(i, j - i)});
      i = j;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && std::isalpha(static_cast<unsigned char>(s[j])))
        ++j;
      out.push_back({Tok::kIdent, s.substr(i, j - i)});
      i = j;
      continue;
    }
    if (c == '\\') {
      if (i + 1 < s.size() &&
          std::isalpha(static_cast<unsigned char>(s[i + 1]))) {
        size_t j = i + 1;
        while (j < s.size() && std::isalpha(static_cast<unsigned char>(s[j])))
          ++j;
        out.push_back({Tok::kCommand, s.substr(i + 1, j - i - 1)});
        i = j;
      } else if (i + 1 < s.size()) {
        out.push_back({Tok::kPunct, s.substr(i, 2)});  // \{ \} \\ \|
        i += 2;
      } else {
        ++i;
      }
      continue;
    }
    if (static_cast<unsigned char>(c) >= 0x80)
      throw TooComplex{"unsupported character"};
    out.push_back({Tok::kPunct, std::string(1, c)});
    ++i;
  }
  return out;
}

// ------------------------------------------------------------------ parser
struct ParseError {
  std::string why;
};

const std::set<std::string>& FunctionNames() {
  static const auto* names = new std::set<std::string>{
      "sin",    "cos",    "tan",  "cot",  "sec",  "csc", "arcsin",
      "arccos", "arctan", "sinh", "cosh", "tanh", "log", "ln",
      "lg",     "exp",    "det",  "gcd",  "lcm",  "max", "min"};
  return *names;
}

const std::set<std::string>& GreekLetters() {
  static const auto* names = new std::set<std::string>{
      "alpha",  "beta",  "gamma",    "delta", "epsilon", "varepsilon", "zeta",
      "eta",    "theta", "vartheta", "iota",  "kappa",   "lambda",     "mu",
      "nu",     "xi",    "rho",      "sigma", "tau",     "upsilon",    "phi",
      "varphi", "chi",   "psi",      "omega", "Gamma",   "Delta",      "Theta",
      "Lambda", "Xi",    "Sigma",    "Phi",   "Psi",     "Omega"};
  return *names;
}

class Parser {
 public:
  Parser(std::vector<Token> tokens, Budget& budget)
      : t_(std::move(tokens)), budget_(budget) {}

  NodeP ParseAnswer() {
    NodeP node = ParseList();
    if (!AtEnd()) Error(absl::StrCat("unexpected '", Peek().text, "'"));
    return node;
  }

 private:
  struct Depth {
    explicit Depth(Parser* p) : parser(p) {
      if (++parser->depth_ > 60)
        throw TooComplex{"the answer is nested too deeply"};
    }
    ~Depth() { --parser->depth_; }
    Parser* parser;
  };

  [[noreturn]] void Error(const std::string& why) { throw ParseError{why}; }
  bool AtEnd() const { return pos_ >= t_.size(); }
  const Token& Peek(size_t ahead = 0) const {
    static const Token kEnd{Tok::kEnd, ""};
    return pos_ + ahead < t_.size() ? t_[pos_ + ahead] : kEnd;
  }
  bool IsPunct(const char* p) const {
    return Peek().type == Tok::kPunct && Peek().text == p;
  }
  bool IsCommand(const char* c) const {
    return Peek().type == Tok::kCommand && Peek().text == c;
  }
  Token Next() {
    budget_.Step();
    if (AtEnd()) Error("unexpected end");
    return t_[pos_++];
  }
  void Expect(const char* p) {
    if (!IsPunct(p)) Error(absl::StrCat("expected '", p, "'"));
    ++pos_;
  }

  // Top level: answers separated by commas or "or"/"and".
  NodeP ParseList() {
    std::vector<NodeP> items = {ParseRelation()};
    while (IsPunct(",") || IsPunct(";") ||
           (Peek().type == Tok::kIdent &&
            (Peek().text == "or" || Peek().text == "and"))) {
      ++pos_;
      items.push_back(ParseRelation());
    }
    return items.size() == 1 ? items[0] : Make(Kind::kList, std::move(items));
  }

  // Comma-separated items inside brackets.
  std::vector<NodeP> ParseItems(const char* close_a,
                                const char* close_b = nullptr) {
    std::vector<NodeP> items;
    if (IsPunct(close_a) || (close_b != nullptr && IsPunct(close_b)))
      return items;
    items.push_back(ParseRelation());
    while (IsPunct(",") || IsPunct(";")) {
      ++pos_;
      items.push_back(ParseRelation());
    }
    return items;
  }

  std::optional<std::string> RelationOp() {
    const Token& tok = Peek();
    if (tok.type == Tok::kPunct) {
      if (tok.text == "=") return "=";
      if (tok.text == "<") return IsPunctAt(1, "=") ? "<=" : "<";
      if (tok.text == ">") return IsPunctAt(1, "=") ? ">=" : ">";
    }
    if (tok.type == Tok::kCommand) {
      if (tok.text == "le" || tok.text == "leq" || tok.text == "leqslant")
        return "<=";
      if (tok.text == "ge" || tok.text == "geq" || tok.text == "geqslant")
        return ">=";
      if (tok.text == "lt") return "<";
      if (tok.text == "gt") return ">";
      if (tok.text == "ne" || tok.text == "neq") return "!=";
      if (tok.text == "approx") return "=";
    }
    return std::nullopt;
  }
  bool IsPunctAt(size_t ahead, const char* p) const {
    return Peek(ahead).type == Tok::kPunct && Peek(ahead).text == p;
  }

  NodeP ParseRelation() {
    Depth depth(this);
    NodeP left = ParseUnion();
    std::vector<NodeP> chain;
    while (std::optional<std::string> op = RelationOp()) {
      ++pos_;
      if ((*op == "<=" || *op == ">=") && IsPunct("=")) ++pos_;
      NodeP right = ParseUnion();
      chain.push_back(Make(Kind::kRelation, {left, right}, *op));
      left = right;
    }
    if (chain.empty()) return left;
    if (chain.size() == 1) return chain[0];
    return Make(Kind::kList, std::move(chain), "and");  // a < x < b
  }

  NodeP ParseUnion() {
    NodeP left = ParseSum();
    if (!IsCommand("cup")) return left;
    std::vector<NodeP> parts = {left};
    while (IsCommand("cup")) {
      ++pos_;
      parts.push_back(ParseSum());
    }
    return Make(Kind::kUnion, std::move(parts));
  }

  NodeP ParseSum() {
    std::vector<NodeP> terms = {ParseTerm()};
    while (true) {
      if (IsPunct("+")) {
        ++pos_;
        terms.push_back(ParseTerm());
      } else if (IsPunct("-")) {
        ++pos_;
        terms.push_back(Make(Kind::kNeg, {ParseTerm()}));
      } else if (IsCommand("pm") || IsCommand("mp")) {
        const bool mp = Next().text == "mp";
        NodeP base = terms.size() == 1 ? terms[0] : Make(Kind::kAdd, terms);
        NodeP rest = ParseSum();
        return Make(Kind::kPlusMinus, {base, rest}, mp ? "mp" : "pm");
      } else {
        break;
      }
    }
    return terms.size() == 1 ? terms[0] : Make(Kind::kAdd, std::move(terms));
  }

  bool StartsFactor() const {
    const Token& tok = Peek();
    switch (tok.type) {
      case Tok::kNumber:
        return true;
      case Tok::kIdent:
        return tok.text != "or" && tok.text != "and";
      case Tok::kCommand: {
        static const std::set<std::string> kNot = {
            "cup", "pm",     "mp",       "le",       "leq",  "ge",    "geq",
            "lt",  "gt",     "ne",       "neq",      "cdot", "times", "div",
            "end", "approx", "leqslant", "geqslant", "ast",  "to",    "in"};
        return kNot.count(tok.text) == 0;
      }
      case Tok::kPunct:
        return tok.text == "(" || tok.text == "{" || tok.text == "\\{";
      default:
        return false;
    }
  }

  NodeP ParseTerm() {
    std::vector<NodeP> factors = {ParseUnary()};
    while (true) {
      if (IsPunct("*") || IsCommand("cdot") || IsCommand("times") ||
          IsCommand("ast")) {
        ++pos_;
        factors.push_back(ParseUnary());
      } else if (IsPunct("/") || IsCommand("div")) {
        ++pos_;
        factors.push_back(Make(Kind::kInv, {ParseUnary()}));
      } else if (StartsFactor()) {
        factors.push_back(ParsePower());  // implicit multiplication
      } else {
        break;
      }
    }
    return factors.size() == 1 ? factors[0]
                               : Make(Kind::kMul, std::move(factors));
  }

  NodeP ParseUnary() {
    Depth depth(this);
    if (IsPunct("-")) {
      ++pos_;
      return Make(Kind::kNeg, {ParseUnary()});
    }
    if (IsPunct("+")) {
      ++pos_;
      return ParseUnary();
    }
    return ParsePower();
  }

  // An exponent or a \frac / \sqrt argument: a {group} or a single character.
  NodeP ParseArgument() {
    Depth depth(this);
    if (IsPunct("{")) {
      ++pos_;
      NodeP inner = ParseList();
      Expect("}");
      return inner;
    }
    if (Peek().type == Tok::kNumber) {
      // LaTeX takes one character: x^23 is x^2 * 3, \frac12 is 1/2.
      Token tok = Next();
      if (tok.text.size() > 1) {
        t_.insert(t_.begin() + static_cast<long>(pos_),
                  Token{Tok::kNumber, tok.text.substr(1)});
        tok.text = tok.text.substr(0, 1);
      }
      return ParseNumber(tok.text);
    }
    if (Peek().type == Tok::kIdent) {
      Token tok = Next();
      if (tok.text.size() > 1) {
        t_.insert(t_.begin() + static_cast<long>(pos_),
                  Token{Tok::kIdent, tok.text.substr(1)});
        tok.text = tok.text.substr(0, 1);
      }
      return Symbol(tok.text);
    }
    if (IsPunct("-")) {
      ++pos_;
      return Make(Kind::kNeg, {ParseArgument()});
    }
    return ParsePrimary();
  }

  NodeP ParsePower() {
    Depth depth(this);
    NodeP base = ParsePostfix(ParsePrimary());
    if (IsPunct("^")) {
      ++pos_;
      NodeP exponent = ParseArgument();
      return ParsePostfix(Make(Kind::kPow, {base, exponent}));
    }
    return base;
  }

  NodeP ParsePostfix(NodeP node) {
    while (true) {
      if (IsPunct("!")) {
        ++pos_;
        node = Make(Kind::kFactorial, {node});
      } else if (IsPunct("%")) {
        ++pos_;
        node = Make(Kind::kPercent, {node});
      } else if (IsPunct("'")) {
        Error("primes are not supported");
      } else {
        return node;
      }
    }
  }

  NodeP ParseNumber(const std::string& text) {
    // digits[.digits][e[+-]digits]: an exact rational.
    Int num = 0, den = 1;
    bool decimal = false;
    size_t i = 0;
    int digits = 0;
    for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]));
         ++i) {
      if (++digits > 30) throw TooComplex{"number too long"};
      num = num * 10 + (text[i] - '0');
    }
    if (i < text.size() && text[i] == '.') {
      ++i;
      for (;
           i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]));
           ++i) {
        if (++digits > 30) throw TooComplex{"number too long"};
        num = num * 10 + (text[i] - '0');
        den *= 10;
        decimal = true;
      }
    }
    if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
      ++i;
      bool negative = false;
      if (i < text.size() && (text[i] == '+' || text[i] == '-'))
        negative = text[i++] == '-';
      int exponent = 0;
      for (;
           i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]));
           ++i) {
        exponent = exponent * 10 + (text[i] - '0');
        if (exponent > 25) throw TooComplex{"exponent too large"};
      }
      for (int k = 0; k < exponent; ++k) (negative ? den : num) *= 10;
      decimal = true;
    }
    return Number(Rational::Of(num, den), decimal);
  }

  NodeP Symbol(const std::string& name) {
    if (name == "pi") return Make(Kind::kConstant, {}, "pi");
    if (name == "e") return Make(Kind::kConstant, {}, "e");
    if (name == "i") return Make(Kind::kConstant, {}, "i");
    return Make(Kind::kSymbol, {}, name);
  }

  // Optional subscript after a symbol: x_1, a_{n}.
  std::string Subscript() {
    if (!IsPunct("_")) return "";
    ++pos_;
    if (!IsPunct("{")) return "_" + Next().text.substr(0, 1);
    return "_" + BracedText();
  }

  // The tokens of a {...} group at the cursor, as text.
  std::string BracedText() {
    Expect("{");
    std::string text;
    int depth = 1;
    while (true) {
      const Token tok = Next();
      if (tok.type == Tok::kPunct && tok.text == "{") ++depth;
      if (tok.type == Tok::kPunct && tok.text == "}" && --depth == 0)
        return text;
      text += tok.text;
    }
  }

  NodeP ParseFunction(const std::string& name) {
    NodeP power;
    NodeP base;
    if (IsPunct("_")) {  // \log_{b}
      ++pos_;
      base = ParseArgument();
    }
    if (IsPunct("^")) {  // \sin^2 x
      ++pos_;
      power = ParseArgument();
    }
    NodeP arg;
    if (IsPunct("(")) {
      ++pos_;
      std::vector<NodeP> items = ParseItems(")");
      Expect(")");
      if (items.empty()) Error("empty function argument");
      arg = items.size() == 1 ? items[0] : Make(Kind::kTuple, std::move(items));
    } else if (IsPunct("{")) {
      arg = ParseArgument();
    } else {
      arg = ParsePower();
    }
    std::vector<NodeP> args = {arg};
    if (arg->kind == Kind::kTuple &&
        (name == "gcd" || name == "lcm" || name == "max" || name == "min")) {
      args = arg->args;
    }
    if (base != nullptr) args.push_back(base);
    NodeP call =
        Make(Kind::kFunction, std::move(args), name == "lg" ? "log10" : name);
    return power != nullptr ? Make(Kind::kPow, {call, power}) : call;
  }

  NodeP ParseMatrix(const std::string& environment) {
    if (environment == "array" && IsPunct("{")) BracedText();  // column spec
    std::vector<std::vector<NodeP>> rows(1);
    while (true) {
      if (IsCommand("end")) {
        ++pos_;
        BracedText();
        break;
      }
      if (AtEnd()) Error("unterminated matrix");
      rows.back().push_back(ParseRelation());
      if (IsPunct("&")) {
        ++pos_;
      } else if (IsPunct("\\\\")) {
        ++pos_;
        if (!IsCommand("end")) rows.emplace_back();
      }
    }
    const size_t cols = rows[0].size();
    auto matrix = Make(Kind::kMatrix);
    for (const auto& row : rows) {
      if (row.size() != cols) Error("ragged matrix");
      matrix->args.insert(matrix->args.end(), row.begin(), row.end());
    }
    matrix->rows = static_cast<int>(rows.size());
    matrix->cols = static_cast<int>(cols);
    return matrix;
  }

  NodeP ParsePrimary() {
    Depth depth(this);
    const Token tok = Next();
    switch (tok.type) {
      case Tok::kNumber:
        return ParseNumber(tok.text);
      case Tok::kIdent: {
        if (FunctionNames().count(tok.text) != 0)
          return ParseFunction(tok.text);
        if (tok.text == "pi" || tok.text == "infty" || tok.text == "inf") {
          return tok.text == "pi" ? Symbol("pi")
                                  : Make(Kind::kConstant, {}, "inf");
        }
        if (tok.text.size() > 1) {
          // Letters multiply (xy = x*y); a run of letters is split.
          t_.insert(t_.begin() + static_cast<long>(pos_),
                    Token{Tok::kIdent, tok.text.substr(1)});
        }
        std::string name = tok.text.substr(0, 1);
        const std::string sub = Subscript();
        return sub.empty() ? Symbol(name) : Make(Kind::kSymbol, {}, name + sub);
      }
      case Tok::kCommand: {
        const std::string& c = tok.text;
        if (c == "frac") {
          NodeP num = ParseArgument();
          NodeP den = ParseArgument();
          return Make(Kind::kMul, {num, Make(Kind::kInv, {den})});
        }
        if (c == "sqrt") {
          NodeP index;
          if (IsPunct("[")) {
            ++pos_;
            index = ParseSum();
            Expect("]");
          }
          NodeP radicand = ParseArgument();
          NodeP exponent = index == nullptr ? Number(Rational::Of(1, 2))
                                            : Make(Kind::kInv, {index});
          return Make(Kind::kPow, {radicand, exponent});
        }
        if (c == "binom") {
          NodeP n = ParseArgument();
          NodeP k = ParseArgument();
          return Make(Kind::kFunction, {n, k}, "binom");
        }
        if (c == "pi") return Symbol("pi");
        if (c == "infty" || c == "infinity")
          return Make(Kind::kConstant, {}, "inf");
        if (c == "emptyset" || c == "varnothing") return Make(Kind::kSet);
        if (FunctionNames().count(c) != 0) return ParseFunction(c);
        if (c == "operatorname") return ParseFunction(BracedText());
        if (GreekLetters().count(c) != 0) {
          const std::string sub = Subscript();
          return Make(Kind::kSymbol, {}, c + sub);
        }
        if (c == "begin") {
          const std::string environment = BracedText();
          if (environment == "pmatrix" || environment == "bmatrix" ||
              environment == "matrix" || environment == "Bmatrix" ||
              environment == "vmatrix" || environment == "array" ||
              environment == "smallmatrix") {
            return ParseMatrix(environment);
          }
          Error(absl::StrCat("unsupported environment ", environment));
        }
        if (c == "mathbb" || c == "mathcal") {
          NodeP inner = ParseArgument();
          return Make(
              Kind::kText, {},
              "set:" + (inner->kind == Kind::kSymbol ? inner->name : "?"));
        }
        Error(absl::StrCat("unsupported command \\", c));
      }
      case Tok::kPunct: {
        const std::string& p = tok.text;
        if (p == "(" || p == "[") {
          std::vector<NodeP> items = ParseItems(")", "]");
          const bool close_round = IsPunct(")");
          if (!close_round && !IsPunct("]")) Error("unclosed bracket");
          ++pos_;
          if (items.size() == 1 && p == "(" && close_round) return items[0];
          if (items.size() == 1 && p == "[" && !close_round) return items[0];
          if (items.size() == 2 && !(p == "(" && close_round)) {
            auto interval = Make(Kind::kInterval, std::move(items));
            interval->left_closed = p == "[";
            interval->right_closed = !close_round;
            return interval;
          }
          if (items.empty()) Error("empty brackets");
          return Make(
              Kind::kTuple,
              std::move(items));  // (a, b) is a tuple or an open interval
        }
        if (p == "\\{") {
          std::vector<NodeP> items = ParseItems("\\}");
          Expect("\\}");
          return Make(Kind::kSet, std::move(items));
        }
        if (p == "{") {
          std::vector<NodeP> items = ParseItems("}");
          Expect("}");
          if (items.size() != 1) return Make(Kind::kSet, std::move(items));
          return items[0];
        }
        if (p == "|") {
          NodeP inner = ParseSum();
          Expect("|");
          return Make(Kind::kAbs, {inner});
        }
        Error(absl::StrCat("unexpected '", p, "'"));
      }
      default:
        Error("unexpected end");
    }
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  int depth_ = 0;
  Budget& budget_;
};

// The comparable form of a text answer ("Sunday", "(C)", "\text{odd}"):
// lowercase, without spaces, outer parentheses or trailing punctuation. Signs
// and operators are kept, so an unparseable expression only matches itself.
std::string TextKey(absl::string_view text) {
  std::string out;
  for (char c : text) {
    if (c != ' ' && c != '\t' && c != '{' && c != '}') {
      out.push_back(
          static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
  }
  while (!out.empty() && (out.back() == '.' || out.back() == '!'))
    out.pop_back();
  while (out.size() >= 2 && out.front() == '(' && out.back() == ')')
    out = out.substr(1, out.size() - 2);
  return out;
}

// Whether an answer is prose rather than mathematics: it has a word of three or
// more letters that is not a function or constant name.
bool IsWordy(const std::string& normalized) {
  static const std::set<std::string> kMath = {
      "sin",   "cos",  "tan",  "cot",   "sec",     "csc",     "log",
      "exp",   "sqrt", "frac", "infty", "pmatrix", "bmatrix", "matrix",
      "begin", "end",  "cdot", "times", "arcsin",  "arccos",  "arctan",
      "sinh",  "cosh", "tanh", "binom", "and"};
  size_t i = 0;
  while (i < normalized.size()) {
    if (!std::isalpha(static_cast<unsigned char>(normalized[i]))) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < normalized.size() &&
           std::isalpha(static_cast<unsigned char>(normalized[j])))
      ++j;
    const bool command = i > 0 && normalized[i - 1] == '\\';
    const std::string word = normalized.substr(i, j - i);
    if (!command && word.size() >= 3 && kMath.count(word) == 0 &&
        GreekLetters().count(word) == 0 && FunctionNames().count(word) == 0) {
      return true;
    }
    i = j;
  }
  return false;
}

// ------------------------------------------------------------------ evaluation
using Env = std::map<std::string, Complex>;

bool HasDecimal(const Node& n) {
  if (n.kind == Kind::kNumber) return n.decimal;
  for (const NodeP& a : n.args) {
    if (HasDecimal(*a)) return true;
  }
  return false;
}

void Symbols(const Node& n, std::set<std::string>* out) {
  if (n.kind == Kind::kSymbol) out->insert(n.name);
  for (const NodeP& a : n.args) Symbols(*a, out);
}

bool IsScalar(const Node& n) {
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

// Exact value of a scalar without symbols, if it is rational and computable.
std::optional<Rational> Exact(const Node& n, Budget& budget) {
  budget.Step();
  switch (n.kind) {
    case Kind::kNumber:
      return n.value;
    case Kind::kAdd: {
      Rational sum = Rational::Of(0);
      for (const NodeP& a : n.args) {
        std::optional<Rational> v = Exact(*a, budget);
        if (!v) return std::nullopt;
        sum = Add(sum, *v);
        if (!sum.ok) return std::nullopt;
      }
      return sum;
    }
    case Kind::kMul: {
      Rational product = Rational::Of(1);
      for (const NodeP& a : n.args) {
        std::optional<Rational> v = Exact(*a, budget);
        if (!v) return std::nullopt;
        product = Mul(product, *v);
        if (!product.ok) return std::nullopt;
      }
      return product;
    }
    case Kind::kNeg: {
      std::optional<Rational> v = Exact(*n.args[0], budget);
      if (!v) return std::nullopt;
      return Rational::Of(-v->num, v->den);
    }
    case Kind::kInv: {
      std::optional<Rational> v = Exact(*n.args[0], budget);
      if (!v || v->num == 0) return std::nullopt;
      return Inverse(*v);
    }
    case Kind::kPercent: {
      std::optional<Rational> v = Exact(*n.args[0], budget);
      if (!v) return std::nullopt;
      return Mul(*v, Rational::Of(1, 100));
    }
    case Kind::kAbs: {
      std::optional<Rational> v = Exact(*n.args[0], budget);
      if (!v) return std::nullopt;
      return Rational::Of(v->num < 0 ? -v->num : v->num, v->den);
    }
    case Kind::kFactorial: {
      std::optional<Rational> v = Exact(*n.args[0], budget);
      if (!v || v->den != 1 || v->num < 0 || v->num > 25) return std::nullopt;
      Int result = 1;
      for (Int k = 2; k <= v->num; ++k) result *= k;
      return Rational::Of(result);
    }
    case Kind::kFunction: {
      if (n.name == "binom" && n.args.size() == 2) {
        std::optional<Rational> a = Exact(*n.args[0], budget),
                                b = Exact(*n.args[1], budget);
        if (!a || !b || a->den != 1 || b->den != 1 || b->num < 0 ||
            a->num < 0 || a->num > 120) {
          return std::nullopt;
        }
        if (b->num > a->num) return Rational::Of(0);
        Int result = 1;
        for (Int k = 1; k <= b->num; ++k) {
          result = result * (a->num - b->num + k) / k;
          if (result > kLimit) return std::nullopt;
        }
        return Rational::Of(result);
      }
      if ((n.name == "gcd" || n.name == "lcm") && n.args.size() >= 2) {
        Int acc = 0;
        bool first = true;
        for (const NodeP& a : n.args) {
          std::optional<Rational> v = Exact(*a, budget);
          if (!v || v->den != 1) return std::nullopt;
          if (first) {
            acc = v->num < 0 ? -v->num : v->num;
            first = false;
          } else if (n.name == "gcd") {
            acc = Gcd(acc, v->num);
          } else {
            const Int g = Gcd(acc, v->num);
            acc = g == 0 ? 0 : acc / g * (v->num < 0 ? -v->num : v->num);
            if (acc > kLimit) return std::nullopt;
          }
        }
        return Rational::Of(acc);
      }
      return std::nullopt;
    }
    case Kind::kPow: {
      std::optional<Rational> base = Exact(*n.args[0], budget);
      std::optional<Rational> exponent = Exact(*n.args[1], budget);
      if (!base || !exponent) return std::nullopt;
      if (exponent->den == 1) {
        Int e = exponent->num;
        if (e > 128 || e < -128) return std::nullopt;
        const bool invert = e < 0;
        if (invert) e = -e;
        Rational result = Rational::Of(1);
        for (Int k = 0; k < e; ++k) {
          budget.Step();
          result = Mul(result, *base);
          if (!result.ok) return std::nullopt;
        }
        return invert ? (result.num == 0
                             ? std::optional<Rational>()
                             : std::optional<Rational>(Inverse(result)))
                      : std::optional<Rational>(result);
      }
      if (exponent->den == 2 && exponent->num > 0 && exponent->num <= 8 &&
          base->num >= 0) {
        std::optional<Int> root_num = ExactSqrt(base->num);
        std::optional<Int> root_den = ExactSqrt(base->den);
        if (!root_num || !root_den) return std::nullopt;
        Rational root = Rational::Of(*root_num, *root_den);
        Rational result = Rational::Of(1);
        for (Int k = 0; k < exponent->num; ++k) result = Mul(result, root);
        return result.ok ? std::optional<Rational>(result) : std::nullopt;
      }
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

double Factorial(double x) { return std::tgamma(x + 1); }

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

bool HasInfinity(const Node& n) {
  if (n.kind == Kind::kConstant && n.name == "inf") return true;
  for (const NodeP& a : n.args) {
    if (HasInfinity(*a)) return true;
  }
  return false;
}

// ------------------------------------------------------------------ equality
class Comparer {
 public:
  explicit Comparer(Budget& budget) : budget_(budget) {}

  bool Equal(const NodeP& gold, const NodeP& pred) {
    budget_.Step();
    // x = 5 against 5, and 5 against x = 5.
    if (IsAssignment(*gold) && pred->kind != Kind::kRelation)
      return Equal(gold->args[1], pred);
    if (IsAssignment(*pred) && gold->kind != Kind::kRelation)
      return Equal(gold, pred->args[1]);
    // a ± b: both values.
    if (gold->kind == Kind::kPlusMinus && pred->kind != Kind::kPlusMinus)
      return Equal(Expand(gold), pred);
    if (pred->kind == Kind::kPlusMinus && gold->kind != Kind::kPlusMinus)
      return Equal(gold, Expand(pred));
    // A single-element collection against its element.
    if (IsUnordered(*gold) && gold->args.size() == 1 && !IsUnordered(*pred))
      return Equal(gold->args[0], pred);
    if (IsUnordered(*pred) && pred->args.size() == 1 && !IsUnordered(*gold))
      return Equal(gold, pred->args[0]);

    if (IsScalar(*gold) && IsScalar(*pred)) return ScalarEqual(*gold, *pred);
    switch (gold->kind) {
      case Kind::kText:
        return pred->kind == Kind::kText ? gold->name == pred->name : false;
      case Kind::kTuple:
        if (pred->kind == Kind::kTuple || pred->kind == Kind::kList)
          return Ordered(gold->args, pred->args);
        if (pred->kind == Kind::kInterval) return OpenInterval(*pred, *gold);
        return false;
      case Kind::kInterval:
        if (pred->kind == Kind::kInterval) {
          return gold->left_closed == pred->left_closed &&
                 gold->right_closed == pred->right_closed &&
                 Ordered(gold->args, pred->args);
        }
        if (pred->kind == Kind::kTuple) return OpenInterval(*gold, *pred);
        if (pred->kind == Kind::kUnion && pred->args.size() == 1)
          return Equal(gold, pred->args[0]);
        return false;
      case Kind::kSet:
      case Kind::kList:
        if (pred->kind == Kind::kSet || pred->kind == Kind::kList)
          return Unordered(gold->args, pred->args);
        if (pred->kind == Kind::kPlusMinus)
          return Unordered(gold->args, Expand(pred)->args);
        return false;
      case Kind::kUnion:
        if (pred->kind == Kind::kUnion)
          return Unordered(gold->args, pred->args);
        return false;
      case Kind::kMatrix:
        return pred->kind == Kind::kMatrix && gold->rows == pred->rows &&
               gold->cols == pred->cols && Ordered(gold->args, pred->args);
      case Kind::kPlusMinus:
        if (pred->kind == Kind::kPlusMinus) {
          return (Equal(gold->args[0], pred->args[0]) &&
                  Equal(gold->args[1], pred->args[1])) ||
                 Equal(Expand(gold), Expand(pred));
        }
        return false;
      case Kind::kRelation:
        if (pred->kind != Kind::kRelation) return false;
        if (gold->name == pred->name) {
          if (Equal(gold->args[0], pred->args[0]) &&
              Equal(gold->args[1], pred->args[1]))
            return true;
          if ((gold->name == "=" || gold->name == "!=") &&
              Equal(gold->args[0], pred->args[1]) &&
              Equal(gold->args[1], pred->args[0])) {
            return true;
          }
          if (gold->name == "=" && IsScalar(*gold->args[0]) &&
              IsScalar(*gold->args[1]) && IsScalar(*pred->args[0]) &&
              IsScalar(*pred->args[1])) {
            // l1 - r1 = ±(l2 - r2)
            NodeP a = Make(Kind::kAdd,
                           {gold->args[0], Make(Kind::kNeg, {gold->args[1]})});
            NodeP b = Make(Kind::kAdd,
                           {pred->args[0], Make(Kind::kNeg, {pred->args[1]})});
            return ScalarEqual(*a, *b) ||
                   ScalarEqual(*a, *Make(Kind::kNeg, {b}));
          }
          return false;
        }
        return Flipped(gold->name) == pred->name &&
               Equal(gold->args[0], pred->args[1]) &&
               Equal(gold->args[1], pred->args[0]);
      default:
        return false;
    }
  }

 private:
  static bool IsAssignment(const Node& n) {
    return n.kind == Kind::kRelation && n.name == "=" &&
           n.args[0]->kind == Kind::kSymbol;
  }
  static bool IsUnordered(const Node& n) {
    return n.kind == Kind::kSet || n.kind == Kind::kList;
  }
  static std::string Flipped(const std::string& op) {
    if (op == "<") return ">";
    if (op == ">") return "<";
    if (op == "<=") return ">=";
    if (op == ">=") return "<=";
    return op;
  }
  static NodeP Expand(const NodeP& pm) {
    const NodeP& a = pm->args[0];
    const NodeP& b = pm->args[1];
    return Make(Kind::kSet, {Make(Kind::kAdd, {a, b}),
                             Make(Kind::kAdd, {a, Make(Kind::kNeg, {b})})});
  }

  bool OpenInterval(const Node& interval, const Node& tuple) {
    return !interval.left_closed && !interval.right_closed &&
           tuple.args.size() == 2 && Ordered(interval.args, tuple.args);
  }

  bool Ordered(const std::vector<NodeP>& a, const std::vector<NodeP>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!Equal(a[i], b[i])) return false;
    }
    return true;
  }

  bool Unordered(const std::vector<NodeP>& a, const std::vector<NodeP>& b) {
    if (a.size() != b.size()) return false;
    if (a.size() > 64) throw TooComplex{"too many elements to compare"};
    std::vector<bool> used(b.size(), false);
    return Match(a, b, 0, &used);
  }
  bool Match(const std::vector<NodeP>& a, const std::vector<NodeP>& b, size_t i,
             std::vector<bool>* used) {
    if (i == a.size()) return true;
    for (size_t j = 0; j < b.size(); ++j) {
      if ((*used)[j] || !Equal(a[i], b[j])) continue;
      (*used)[j] = true;
      if (Match(a, b, i + 1, used)) return true;
      (*used)[j] = false;
    }
    return false;
  }

  bool ScalarEqual(const Node& gold, const Node& pred) {
    std::set<std::string> gold_symbols, pred_symbols;
    Symbols(gold, &gold_symbols);
    Symbols(pred, &pred_symbols);
    if (gold_symbols != pred_symbols) return false;
    if (gold_symbols.empty()) {
      // 50% also matches 50 (the number written without its percent sign).
      if (gold.kind == Kind::kPercent && pred.kind != Kind::kPercent &&
          ScalarEqual(*gold.args[0], pred)) {
        return true;
      }
      if (pred.kind == Kind::kPercent && gold.kind != Kind::kPercent &&
          ScalarEqual(gold, *pred.args[0])) {
        return true;
      }
      const std::optional<Rational> a = Exact(gold, budget_);
      const std::optional<Rational> b = Exact(pred, budget_);
      const bool decimal = HasDecimal(gold) || HasDecimal(pred);
      if (a && b) {
        if (a->num == b->num && a->den == b->den) return true;
        return decimal && DecimalMatch(a->ToDouble(), b->ToDouble());
      }
      const Complex x = Eval(gold, {}, budget_);
      const Complex y = Eval(pred, {}, budget_);
      if (std::isnan(x.real()) || std::isnan(y.real()) ||
          std::isnan(x.imag()) || std::isnan(y.imag())) {
        return false;
      }
      // Values too large for doubles (2^{4950}) are only equal when written the
      // same way, which the caller has already checked; infinities must be
      // meant.
      const bool finite = std::isfinite(x.real()) && std::isfinite(y.real());
      if (!finite && !(HasInfinity(gold) && HasInfinity(pred))) return false;
      if (Close(x, y, 1e-9)) return true;
      return decimal && finite && DecimalMatch(x.real(), y.real()) &&
             DecimalMatch(x.imag(), y.imag());
    }
    // Expressions in variables: equal at random points.
    std::mt19937_64 rng(0x5eed);
    std::uniform_real_distribution<double> value(0.3, 2.7);
    int compared = 0;
    for (int attempt = 0; attempt < 12 && compared < 6; ++attempt) {
      Env env;
      for (const std::string& name : gold_symbols) env[name] = value(rng);
      const Complex x = Eval(gold, env, budget_);
      const Complex y = Eval(pred, env, budget_);
      const bool x_ok = std::isfinite(x.real()) && std::isfinite(x.imag());
      const bool y_ok = std::isfinite(y.real()) && std::isfinite(y.imag());
      if (!x_ok && !y_ok) continue;
      if (x_ok != y_ok || !Close(x, y, 1e-7)) return false;
      ++compared;
    }
    return compared >= 3;
  }

  Budget& budget_;
};

// What the answer looks like to a reader, for reasons: its normalized text.
std::string Shown(const std::string& normalized) {
  return normalized.size() > 60 ? normalized.substr(0, 57) + "..." : normalized;
}

// Parses a normalized answer; text answers (words, "(A)") become kText.
NodeP ParseOrText(const std::string& normalized, Budget& budget,
                  std::string* error) {
  const std::string key = TextKey(normalized);
  if (IsWordy(normalized)) return Make(Kind::kText, {}, key);
  try {
    Parser parser(Lex(normalized, budget), budget);
    return parser.ParseAnswer();
  } catch (const ParseError& e) {
    *error = e.why;
  }
  // Unparseable: compare as text.
  return Make(Kind::kText, {}, key);
}

}  // namespace

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
  const std::string gold_text = NormalizeLatex(reference);
  const std::string pred_text = NormalizeLatex(answer);
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
    Comparer comparer(budget);
    if (comparer.Equal(gold, pred)) {
      result.equal = true;
      return result;
    }
    if (gold->kind != Kind::kText && pred->kind == Kind::kText &&
        !pred_error.empty()) {
      result.reason = absl::StrCat("cannot parse the answer \"",
                                   Shown(pred_text), "\" (", pred_error, ")");
    } else {
      result.reason = absl::StrCat("answer ", Shown(pred_text),
                                   " != reference ", Shown(gold_text));
    }
  } catch (const TooComplex& e) {
    result.reason = e.why;
  } catch (const TimedOut&) {
    result.reason = "timeout";
    result.timed_out = true;
  }
  return result;
}

}  // namespace microrl::reward
