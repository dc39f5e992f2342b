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
#include "reward_service/rational.h"

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
  int places = 0;         // digits written after the decimal point
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

// Whether `name` (without the backslash) is a macro that only styles text or
// letters: \text, \textbf, \textnormal, \mathrm, \mathbf, \mbox, \bm, ...
bool IsTextMacro(absl::string_view name) {
  static const auto* exact = new std::set<std::string, std::less<>>{
      "mbox", "hbox", "boldsymbol", "bm", "textnormal", "operatorname*"};
  if (exact->count(name) != 0) return true;
  if (absl::StartsWith(name, "text")) return name != "textstyle";
  // \mathbb and \mathcal name sets (\mathbb{R}): parsed, not unwrapped.
  return absl::StartsWith(name, "math") && name != "mathbb" &&
         name != "mathcal" && name != "mathfrak";
}

// Text macros (\text{..}, \mathrm{..}, \textnormal{..}, ...): drop unit words
// (and a following ^2/^3), keep the rest of the text as plain characters.
std::string UnwrapTextCommands(std::string s) {
  size_t from = 0;
  for (int guard = 0; guard < 200; ++guard) {
    // The next "\name{" with a text macro name.
    size_t best = std::string::npos, name_end = 0;
    for (size_t at = s.find('\\', from); at != std::string::npos;
         at = s.find('\\', at + 1)) {
      size_t end = at + 1;
      while (end < s.size() && std::isalpha(static_cast<unsigned char>(s[end])))
        ++end;
      if (end < s.size() && s[end] == '*') ++end;
      if (end < s.size() && s[end] == '{' &&
          IsTextMacro(absl::string_view(s).substr(at + 1, end - at - 1))) {
        best = at;
        name_end = end;
        break;
      }
    }
    if (best == std::string::npos) break;
    size_t end = 0;
    std::optional<std::string> content = Group(s, name_end, &end);
    if (!content) break;
    std::string replacement = *content;
    // "\text{ and }", "\text{or}": separators of a list, kept as words.
    const std::string word =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(*content));
    if (word == "and" || word == "or") {
      s = s.substr(0, best) + " " + word + " " + s.substr(end);
      from = best;
      continue;
    }
    const bool has_digits = std::any_of(
        content->begin(), content->end(),
        [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    const bool whole = best == 0 && end == s.size();
    // Words after a number at the end of an answer are its unit, whatever
    // they are: 21\text{ dogs}, 5\textnormal{ apples}.
    size_t before = best;
    while (before > 0 && s[before - 1] == ' ') --before;
    size_t after = end;
    for (const char* power : {"^{2}", "^{3}", "^2", "^3"}) {
      if (s.compare(after, std::string(power).size(), power) == 0) {
        after += std::string(power).size();
        break;
      }
    }
    const bool trailing_unit =
        before > 0 &&
        (std::isdigit(static_cast<unsigned char>(s[before - 1])) ||
         s[before - 1] == '}' || s[before - 1] == ')') &&
        absl::StripAsciiWhitespace(absl::string_view(s).substr(after)).empty();
    if (!whole && !has_digits && (trailing_unit || IsUnitText(*content))) {
      replacement = "";
      for (const char* power : {"^{2}", "^{3}", "^2", "^3"}) {
        if (s.compare(end, std::string(power).size(), power) == 0) {
          end += std::string(power).size();
          break;
        }
      }
    }
    s = s.substr(0, best) + replacement + s.substr(end);
    from = best;
  }
  return s;
}

// "28 percent", "28 pct", "28 percentage" -> "28%".
std::string PercentWords(std::string s) {
  const std::string lower = absl::AsciiStrToLower(s);
  for (const char* word : {"percentage", "percent", "pct"}) {
    const size_t length = std::string(word).size();
    for (size_t at = lower.rfind(word); at != std::string::npos;
         at = at == 0 ? std::string::npos : lower.rfind(word, at - 1)) {
      const size_t end = at + length;
      if (end < s.size() && std::isalpha(static_cast<unsigned char>(s[end])))
        continue;
      size_t start = at;
      while (start > 0 && s[start - 1] == ' ') --start;
      if (start == 0 || !(std::isdigit(static_cast<unsigned char>(s[start - 1])) ||
                          s[start - 1] == '}' || s[start - 1] == ')'))
        continue;
      return PercentWords(s.substr(0, start) + "%" + s.substr(end));
    }
  }
  return s;
}

// Where the digit groups at the start of `s` end: an optional '-', 1 to 3
// digits (not starting with 0 unless `leading_zero`), then one or more groups
// of three digits each after `separator`; npos when `s` does not start so.
size_t DigitGroupsEnd(const std::string& s, char separator, bool leading_zero) {
  size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  size_t digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
    ++i, ++digits;
  if (digits < 1 || digits > 3) return std::string::npos;
  if (!leading_zero && s[i - digits] == '0') return std::string::npos;
  int groups = 0;
  while (i < s.size() && s[i] == separator) {
    ++i;
    for (int k = 0; k < 3; ++k, ++i) {
      if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i])))
        return std::string::npos;
    }
    ++groups;
  }
  return groups > 0 ? i : std::string::npos;
}

bool IsThousandsNumber(const std::string& s) {
  // -?d{1,3}(,ddd)+(.d+)?; "0,111" is not a thousands number (a decimal comma,
  // or a list).
  size_t i = DigitGroupsEnd(s, ',', /*leading_zero=*/false);
  if (i == std::string::npos) return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (i >= s.size()) return false;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  }
  return i == s.size();
}

// "1 000" and "1 000 000": groups of three digits after the first, one space
// apart, and nothing else.
bool IsSpacedThousands(const std::string& s) {
  return DigitGroupsEnd(s, ' ', /*leading_zero=*/true) == s.size();
}

// "\\frac", "\\left(": a doubled backslash before a command name is an
// escaping slip (a string written twice escaped), not a line break followed by
// letters. Only names of commands are mended: "\\x" in a matrix stays a
// line break and x.
std::string SingleBackslashes(const std::string& s) {
  static const auto* names = new std::set<std::string, std::less<>>{
      "frac", "dfrac", "tfrac", "sqrt", "left", "right", "le", "leq", "ge",
      "geq", "lt", "gt", "ne", "neq", "boxed", "text", "mathrm", "pi", "cdot",
      "times", "infty", "pm", "mp", "in", "cup", "cap", "alpha", "beta",
      "theta", "sin", "cos", "tan", "log", "ln", "approx", "quad", "qquad",
      "begin", "end", "mathbf", "emptyset", "dots", "ldots", "cdots"};
  if (s.find("\\\\") == std::string::npos) return s;
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && (i == 0 || s[i - 1] != '\\') && i + 2 < s.size() &&
        s[i + 1] == '\\' &&
        std::isalpha(static_cast<unsigned char>(s[i + 2]))) {
      size_t end = i + 2;
      while (end < s.size() && std::isalpha(static_cast<unsigned char>(s[end])))
        ++end;
      if (names->count(absl::string_view(s).substr(i + 2, end - i - 2)) != 0) {
        continue;  // drop the first backslash
      }
    }
    out.push_back(s[i]);
  }
  return out;
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
      {"\xE2\x80\x89", " "},           {"\xC2\xA0", " "},
      {"\xE2\x89\x88", "\\approx "},  {"\xE2\x88\x88", "\\in "}};
  for (const auto& [from, to] : kUnicode) s = ReplaceAll(s, from, to);
  s = SingleBackslashes(s);
  s = UnwrapTextCommands(s);
  s = PercentWords(s);
  // "11,\! 111": a thin space after a comma marks thousands, whatever spaces
  // follow.
  const bool thin_after_comma = s.find(",\\!") != std::string::npos ||
                                s.find("{,}\\!") != std::string::npos;
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
      // Only whole command names (\left but not \leftarrow); spacing is
      // removed even when glued to a name ("\quadx_2").
      const bool spacing = absl::string_view(command) == "\\quad" ||
                           absl::string_view(command) == "\\qquad";
      if (!spacing &&
          std::isalpha(static_cast<unsigned char>(command[len - 1])) &&
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
  // Thousands separators in a lone number: 1,000 / 1{,}000 / 1,\!000 /
  // 1 000. "32, 349" (a space after the comma) is a list.
  s = ReplaceAll(s, "{, }", ",");
  s = ReplaceAll(s, "{,}", ",");
  std::string compact;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != ' ') {
      compact.push_back(s[i]);
    } else if (i > 0 && s[i - 1] == ',' && !thin_after_comma) {
      compact.push_back(' ');
    }
  }
  if (IsThousandsNumber(compact)) {
    s = ReplaceAll(compact, ",", "");
  } else if (IsSpacedThousands(s)) {
    s = ReplaceAll(s, " ", "");
  }
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

  // Top level: answers separated by commas or "or"/"and". The list is named
  // by its separators: "," (an ordered list) or "and"/"or" (a collection
  // whose order does not matter).
  NodeP ParseList() {
    std::vector<NodeP> items = {ParseRelation()};
    std::string separator = ",";
    std::vector<NodeP> groups;  // "p=5,q=2;p=7,q=2": groups split by ';'
    while (IsPunct(",") || IsPunct(";") ||
           (Peek().type == Tok::kIdent &&
            (Peek().text == "or" || Peek().text == "and"))) {
      if (Peek().type == Tok::kIdent) separator = Peek().text;
      if (IsPunct(";")) {
        groups.push_back(items.size() == 1 ? items[0]
                                           : Make(Kind::kTuple, items));
        items.clear();
        ++pos_;
        items.push_back(ParseRelation());
        continue;
      }
      ++pos_;
      // "1, 2, and 3": the comma before a word.
      if (Peek().type == Tok::kIdent &&
          (Peek().text == "or" || Peek().text == "and")) {
        separator = Peek().text;
        ++pos_;
      }
      items.push_back(ParseRelation());
    }
    if (!groups.empty()) {
      groups.push_back(items.size() == 1 ? items[0] : Make(Kind::kTuple, items));
      return Make(Kind::kList, std::move(groups), separator);
    }
    return items.size() == 1 ? items[0]
                             : Make(Kind::kList, std::move(items), separator);
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
      if (tok.text == "!" && IsPunctAt(1, "=")) return "!=";
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
      if (tok.text == "approx" || tok.text == "simeq") return "approx";
      if (tok.text == "leqq") return "<=";
      if (tok.text == "geqq") return ">=";
      if (tok.text == "in") return "in";
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
      if ((*op == "<=" || *op == ">=" || *op == "!=") && IsPunct("=")) ++pos_;
      NodeP right = ParseUnion();
      chain.push_back(Make(Kind::kRelation, {left, right}, *op));
      left = right;
    }
    // "x = 1/3 \approx 0.33": the exact value is the answer, the approximation
    // after it is not; a lone "a \approx b" is an equation.
    while (chain.size() > 1 && chain.back()->name == "approx" &&
           chain[chain.size() - 2]->name != "approx") {
      chain.pop_back();
    }
    for (NodeP& relation : chain) {
      if (relation->name == "approx") relation->name = "=";
    }
    if (chain.empty()) return left;
    if (chain.size() == 1) return chain[0];
    // a = b = c: what was computed is the first side and the last one.
    if (std::all_of(chain.begin(), chain.end(),
                    [](const NodeP& r) { return r->name == "="; })) {
      return Make(Kind::kRelation,
                  {chain.front()->args[0], chain.back()->args[1]}, "=");
    }
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
            "end", "approx", "leqslant", "geqslant", "ast",  "to",    "in",
            "simeq", "leqq", "geqq"};
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
      } else if (IsPunct("/") || IsCommand("div") || IsPunct(":")) {
        ++pos_;  // a ratio a:b is the number a/b
        factors.push_back(Make(Kind::kInv, {ParseUnary()}));
      } else if (StartsFactor()) {
        const bool after_integer =
            factors.size() == 1 && IsIntegerLiteral(*factors[0]);
        const bool fraction_next = IsCommand("frac");
        NodeP factor = ParsePower();  // implicit multiplication
        if (after_integer && fraction_next && IsSimpleFraction(*factor)) {
          // A mixed number: 918\frac{1}{2} is 918 + 1/2.
          const bool negative = factors[0]->kind == Kind::kNeg;
          NodeP whole = negative ? factors[0]->args[0] : factors[0];
          NodeP sum = Make(Kind::kAdd, {whole, factor});
          factors[0] = negative ? Make(Kind::kNeg, {sum}) : sum;
        } else {
          factors.push_back(factor);
        }
      } else {
        break;
      }
    }
    return factors.size() == 1 ? factors[0]
                               : Make(Kind::kMul, std::move(factors));
  }

  // 918, or -918 (an integer as written, no decimal point).
  static bool IsIntegerLiteral(const Node& n) {
    const Node& number = n.kind == Kind::kNeg ? *n.args[0] : n;
    return number.kind == Kind::kNumber && !number.decimal &&
           number.value.is_integer() && number.value.sign() >= 0;
  }
  // \frac{1}{2} with integer literals.
  static bool IsSimpleFraction(const Node& n) {
    return n.kind == Kind::kMul && n.args.size() == 2 &&
           IsIntegerLiteral(*n.args[0]) && n.args[0]->kind == Kind::kNumber &&
           n.args[1]->kind == Kind::kInv &&
           n.args[1]->args[0]->kind == Kind::kNumber &&
           IsIntegerLiteral(*n.args[1]->args[0]);
  }

  NodeP ParseUnary() {
    Depth depth(this);
    if (IsCommand("pm") || IsCommand("mp")) {  // "\pm 2021"
      const bool mp = Next().text == "mp";
      return Make(Kind::kPlusMinus, {Number(Rational()), ParseUnary()},
                  mp ? "mp" : "pm");
    }
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

  // The next token's first character, as a token of its own; the rest of it
  // stays next.
  Token NextCharacter() {
    Token tok = Next();
    if (tok.text.size() > 1) {
      t_.insert(t_.begin() + static_cast<long>(pos_),
                Token{tok.type, tok.text.substr(1)});
      tok.text = tok.text.substr(0, 1);
    }
    return tok;
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
    // LaTeX takes one character: x^23 is x^2 * 3, \frac12 is 1/2.
    if (Peek().type == Tok::kNumber) return ParseNumber(NextCharacter().text);
    if (Peek().type == Tok::kIdent) return Symbol(NextCharacter().text);
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
      if (IsPunct("!") && !IsPunctAt(1, "=")) {
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
    std::optional<Rational> value = Rational::FromDecimal(text);
    if (!value) throw TooComplex{"number too large"};
    const bool decimal = text.find_first_of(".eE") != std::string::npos;
    NodeP number = Number(*value, decimal);
    const size_t point = text.find('.');
    if (point != std::string::npos && text.find_first_of("eE") == std::string::npos)
      number->places = static_cast<int>(text.size() - point - 1);
    return number;
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
          NodeP exponent = index == nullptr ? Number(*Rational::Fraction(1, 2))
                                            : Make(Kind::kInv, {index});
          return Make(Kind::kPow, {radicand, exponent});
        }
        if (c == "sum" || c == "prod") {
          // \sum_{k=a}^{b} body: the bound (a relation k = a), the upper
          // bound and the body, as a function the comparison can look into.
          NodeP lower = Number(Rational()), upper = Number(Rational());
          if (IsPunct("_")) {
            ++pos_;
            lower = ParseArgument();
          }
          if (IsPunct("^")) {
            ++pos_;
            upper = ParseArgument();
          }
          NodeP body = ParseTerm();
          return Make(Kind::kFunction, {lower, upper, body}, c);
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
          // Plain braces group ("{1,3}" is the list 1, 3); \{ \} make a set.
          std::vector<NodeP> items = ParseItems("}");
          Expect("}");
          if (items.empty()) return Make(Kind::kSet);
          if (items.size() != 1) return Make(Kind::kList, std::move(items), ",");
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
      "sinh",  "cosh", "tanh", "binom", "and",   "array",   "vmatrix",
      "Bmatrix", "smallmatrix", "cases", "mod", "pmod", "bmod"};
  size_t i = 0;
  while (i < normalized.size()) {
    // Subscripts name things (S_{MBCN}, a_{max}): not words.
    if (normalized[i] == '_' && i + 1 < normalized.size() &&
        normalized[i + 1] == '{') {
      size_t end = i + 1;
      if (Group(normalized, i + 1, &end)) {
        i = end;
        continue;
      }
    }
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
    // An array's column specification ({ccc}, {lcr}).
    const bool columns = word.find_first_not_of("lcr") == std::string::npos;
    // Short words that only prose has ("so it is").
    static const std::set<std::string> kShortWords = {"is", "so", "it", "we",
                                                      "be", "to", "if", "as"};
    if (!command && kShortWords.count(word) != 0) return true;
    if (!command && !columns && word.size() >= 3 && kMath.count(word) == 0 &&
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
          if (!v || !v->is_integer() || !acc->is_integer())
            return std::nullopt;
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
      if ((f == "sum" || f == "prod") && n.args.size() == 3) {
        // Numeric bounds: add (multiply) the body over the bound variable.
        const Node& lower = *n.args[0];
        if (lower.kind != Kind::kRelation || lower.args[0]->kind != Kind::kSymbol)
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
bool DecimalMatch(const Rational& a, const Rational& b, int places = 6) {
  mpz_class scale;
  mpz_ui_pow_ui(scale.get_mpz_t(), 10, static_cast<unsigned long>(places));  // NOLINT
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

// ------------------------------------------------------------------ equality
// Whether two trees are written alike (same kinds, names, values, shapes).
bool SameTree(const Node& a, const Node& b) {
  if (a.kind != b.kind || a.name != b.name || a.args.size() != b.args.size() ||
      a.left_closed != b.left_closed || a.right_closed != b.right_closed ||
      a.rows != b.rows || a.cols != b.cols)
    return false;
  if (a.kind == Kind::kNumber && !(a.value == b.value)) return false;
  for (size_t i = 0; i < a.args.size(); ++i) {
    if (!SameTree(*a.args[i], *b.args[i])) return false;
  }
  return true;
}

class Comparer {
 public:
  explicit Comparer(Budget& budget) : budget_(budget) {}

  bool Equal(const NodeP& gold, const NodeP& pred) {
    budget_.Step();
    // A labelled answer against a bare one: "x = 5", "(p, q) = (3, 2)",
    // "AB = 4", "z \in [1, 2]" against "5", "(3, 2)", "4", "[1, 2]". A
    // prediction may also show its computation: "\log_2 8 = 3" against "3".
    if (gold->kind == Kind::kRelation && pred->kind != Kind::kRelation &&
        IsLabelled(*gold)) {
      return Equal(gold->args[1], pred);
    }
    if (pred->kind == Kind::kRelation && gold->kind != Kind::kRelation &&
        (IsLabelled(*pred) || IsComputation(*pred))) {
      return Equal(gold, pred->args[1]);
    }
    // "a = 4, -8, -10": one name for several values is the set of them.
    if (NodeP values = LabelledValues(*gold)) return Equal(values, pred);
    if (NodeP values = LabelledValues(*pred)) return Equal(gold, values);
    // Arithmetic on matrices: "A + B", "A B", "2A" against the matrix.
    if (pred->kind != Kind::kMatrix && HasMatrix(*pred)) {
      if (std::optional<NodeP> m = MatrixValue(pred)) return Equal(gold, *m);
    }
    if (gold->kind != Kind::kMatrix && HasMatrix(*gold)) {
      if (std::optional<NodeP> m = MatrixValue(gold)) return Equal(*m, pred);
    }
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
    if (StructurallyEqual(gold, pred)) return true;
    // Sets of real numbers however written: intervals, unions, inequalities.
    if (std::optional<bool> same = SameRealSet(*gold, *pred)) return *same;
    if (gold->kind == Kind::kRelation && pred->kind == Kind::kRelation)
      return EquivalentRelations(*gold, *pred);
    return false;
  }

 private:
  bool StructurallyEqual(const NodeP& gold, const NodeP& pred) {
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
        if (pred->kind == Kind::kSet || pred->kind == Kind::kList)
          return Unordered(gold->args, pred->args);
        if (pred->kind == Kind::kPlusMinus)
          return Unordered(gold->args, Expand(pred)->args);
        return false;
      case Kind::kList:
        // A list is ordered unless the reference joins it with "and"/"or",
        // either side writes a set, it lists solutions as tuples ("(1,2),
        // (2,1)"), or both sides name every element ("a_3 = 2, a_{37} = 19").
        if (pred->kind == Kind::kSet || pred->kind == Kind::kPlusMinus ||
            (pred->kind == Kind::kList &&
             (gold->name != "," || pred->name != "," || AllTuples(*gold) ||
              AllTuples(*pred) || (AllLabelled(*gold) && AllLabelled(*pred))))) {
          return Unordered(gold->args, pred->kind == Kind::kPlusMinus
                                           ? Expand(pred)->args
                                           : pred->args);
        }
        if (pred->kind == Kind::kList || pred->kind == Kind::kTuple)
          return Ordered(gold->args, pred->args);
        return false;
      case Kind::kUnion:
        if (pred->kind == Kind::kUnion)
          return Unordered(gold->args, pred->args);
        return false;
      case Kind::kMatrix:
        return pred->kind == Kind::kMatrix && gold->rows == pred->rows &&
               gold->cols == pred->cols && Ordered(gold->args, pred->args);
      case Kind::kFunction:  // \sum_{k=0}^{n} ...: equal bounds and bodies
        return pred->kind == Kind::kFunction && gold->name == pred->name &&
               Ordered(gold->args, pred->args);
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
          return (gold->name == "=" || gold->name == "!=") &&
                 Equal(gold->args[0], pred->args[1]) &&
                 Equal(gold->args[1], pred->args[0]);
        }
        return Flipped(gold->name) == pred->name &&
               Equal(gold->args[0], pred->args[1]) &&
               Equal(gold->args[1], pred->args[0]);
      default:
        return false;
    }
  }

  // "x = 1, 2, 3" (a list whose first element names a variable and whose
  // other elements are bare values): the set {1, 2, 3}; nullptr otherwise.
  static NodeP LabelledValues(const Node& n) {
    if (n.kind != Kind::kList || n.args.size() < 2 ||
        !IsLabelled(*n.args[0]) || n.args[0]->name != "=")
      return nullptr;
    std::vector<NodeP> values = {n.args[0]->args[1]};
    for (size_t i = 1; i < n.args.size(); ++i) {
      if (n.args[i]->kind == Kind::kRelation) return nullptr;
      values.push_back(n.args[i]);
    }
    return Make(Kind::kSet, std::move(values));
  }

  static bool HasMatrix(const Node& n) {
    if (n.kind == Kind::kMatrix) return true;
    if (n.kind != Kind::kAdd && n.kind != Kind::kMul && n.kind != Kind::kNeg)
      return false;
    return std::any_of(n.args.begin(), n.args.end(),
                       [](const NodeP& a) { return HasMatrix(*a); });
  }

  // The matrix a sum, product or negation of matrices (and scalars) is, with
  // its entries as expressions; nullopt when the shapes do not fit.
  std::optional<NodeP> MatrixValue(const NodeP& n) {
    budget_.Step();
    const auto entry = [](const Node& m, int r, int c) {
      return m.args[static_cast<size_t>(r * m.cols + c)];
    };
    const auto make = [](int rows, int cols, std::vector<NodeP> entries) {
      NodeP m = Make(Kind::kMatrix, std::move(entries));
      m->rows = rows;
      m->cols = cols;
      return m;
    };
    switch (n->kind) {
      case Kind::kMatrix:
        return n;
      case Kind::kNeg: {
        std::optional<NodeP> m = MatrixValue(n->args[0]);
        if (!m) return std::nullopt;
        std::vector<NodeP> entries;
        for (const NodeP& e : (*m)->args) entries.push_back(Make(Kind::kNeg, {e}));
        return make((*m)->rows, (*m)->cols, std::move(entries));
      }
      case Kind::kAdd: {
        std::optional<NodeP> sum;
        for (const NodeP& term : n->args) {
          std::optional<NodeP> m = MatrixValue(term);
          if (!m) return std::nullopt;
          if (!sum) {
            sum = m;
            continue;
          }
          if ((*sum)->rows != (*m)->rows || (*sum)->cols != (*m)->cols)
            return std::nullopt;
          std::vector<NodeP> entries;
          for (size_t k = 0; k < (*m)->args.size(); ++k)
            entries.push_back(Make(Kind::kAdd, {(*sum)->args[k], (*m)->args[k]}));
          sum = make((*m)->rows, (*m)->cols, std::move(entries));
        }
        return sum;
      }
      case Kind::kMul: {
        std::optional<NodeP> product;
        std::vector<NodeP> scalars;
        for (const NodeP& factor : n->args) {
          if (IsScalar(*factor)) {
            scalars.push_back(factor);
            continue;
          }
          std::optional<NodeP> m = MatrixValue(factor);
          if (!m) return std::nullopt;
          if (!product) {
            product = m;
            continue;
          }
          const Node& a = **product;
          const Node& b = **m;
          if (a.cols != b.rows || a.rows * b.cols > 4096) return std::nullopt;
          std::vector<NodeP> entries;
          for (int r = 0; r < a.rows; ++r) {
            for (int c = 0; c < b.cols; ++c) {
              std::vector<NodeP> terms;
              for (int k = 0; k < a.cols; ++k)
                terms.push_back(Make(Kind::kMul, {entry(a, r, k), entry(b, k, c)}));
              entries.push_back(Make(Kind::kAdd, std::move(terms)));
            }
          }
          product = make(a.rows, b.cols, std::move(entries));
        }
        if (!product) return std::nullopt;
        if (scalars.empty()) return product;
        NodeP scale = scalars.size() == 1 ? scalars[0] : Make(Kind::kMul, scalars);
        std::vector<NodeP> entries;
        for (const NodeP& e : (*product)->args)
          entries.push_back(Make(Kind::kMul, {scale, e}));
        return make((*product)->rows, (*product)->cols, std::move(entries));
      }
      default:
        return std::nullopt;
    }
  }

  static bool AllTuples(const Node& list) {
    return std::all_of(list.args.begin(), list.args.end(), [](const NodeP& a) {
      return a->kind == Kind::kTuple && a->args.size() >= 2;
    });
  }
  static bool AllLabelled(const Node& list) {
    return std::all_of(list.args.begin(), list.args.end(),
                       [](const NodeP& a) { return IsLabelled(*a); });
  }

  // A name for an answer: x, a_1, AB (a segment), |AB|, S_1/S (a ratio), f(x),
  // or a tuple of names.
  static bool IsLabel(const Node& n) {
    switch (n.kind) {
      case Kind::kSymbol:
        return true;
      case Kind::kAbs:
        return IsLabel(*n.args[0]);
      case Kind::kConstant:
        return n.name == "e" || n.name == "i";  // letters used as names
      case Kind::kMul:
      case Kind::kTuple:
        for (const NodeP& a : n.args) {
          const Node& f = a->kind == Kind::kInv ? *a->args[0] : *a;
          if (!IsLabel(f)) return false;
        }
        return !n.args.empty();
      default:
        return false;
    }
  }
  static bool IsLabelled(const Node& n) {
    return n.kind == Kind::kRelation && (n.name == "=" || n.name == "in") &&
           IsLabel(*n.args[0]);
  }
  // "\log_2 8 = 3": a computation without variables on the left of "=".
  static bool IsComputation(const Node& n) {
    if (n.kind != Kind::kRelation || n.name != "=" || !IsScalar(*n.args[0]))
      return false;
    std::set<std::string> symbols;
    Symbols(*n.args[0], &symbols);
    return symbols.empty();
  }

  // ---------------------------------------------------- relations by value
  // Two relations between scalars are the same when lhs - rhs of one is a
  // constant non-zero multiple of the other's (any sign for = and !=, a
  // positive one for the same inequality, a negative one for the flipped
  // inequality): y = -x/2 + 3/4 and 2x + 4y - 3 = 0; -x > -1 and 1 > x.
  bool EquivalentRelations(const Node& gold, const Node& pred) {
    static const std::set<std::string> kOps = {"=", "!=", "<", "<=", ">", ">="};
    if (kOps.count(gold.name) == 0 || kOps.count(pred.name) == 0) return false;
    for (const Node* r : {&gold, &pred}) {
      if (!IsScalar(*r->args[0]) || !IsScalar(*r->args[1])) return false;
    }
    const bool gold_equation = gold.name == "=" || gold.name == "!=";
    const bool pred_equation = pred.name == "=" || pred.name == "!=";
    if (gold_equation != pred_equation) return false;
    int wanted_sign = 0;  // of the ratio: 0 for any
    if (gold_equation) {
      if (gold.name != pred.name) return false;
    } else {
      const bool gold_strict = gold.name == "<" || gold.name == ">";
      const bool pred_strict = pred.name == "<" || pred.name == ">";
      if (gold_strict != pred_strict) return false;
      const bool gold_less = gold.name[0] == '<', pred_less = pred.name[0] == '<';
      wanted_sign = gold_less == pred_less ? 1 : -1;
    }
    std::set<std::string> gold_symbols, pred_symbols;
    Symbols(gold, &gold_symbols);
    Symbols(pred, &pred_symbols);
    if (gold_symbols != pred_symbols || gold_symbols.empty()) return false;
    NodeP a = Make(Kind::kAdd, {gold.args[0], Make(Kind::kNeg, {gold.args[1]})});
    NodeP b = Make(Kind::kAdd, {pred.args[0], Make(Kind::kNeg, {pred.args[1]})});
    std::mt19937_64 rng(0x5eed);
    std::uniform_real_distribution<double> value(0.3, 2.7);
    std::optional<double> ratio;
    int compared = 0;
    for (int attempt = 0; attempt < 16 && compared < 6; ++attempt) {
      Env env;
      for (const std::string& name : gold_symbols) env[name] = value(rng);
      const Complex x = Eval(*a, env, budget_);
      const Complex y = Eval(*b, env, budget_);
      if (!std::isfinite(x.real()) || !std::isfinite(y.real()) ||
          std::abs(x.imag()) > 1e-12 || std::abs(y.imag()) > 1e-12)
        continue;
      if (std::abs(x.real()) < 1e-12 || std::abs(y.real()) < 1e-12) {
        // A zero on one side only: not proportional.
        if (std::abs(x.real()) < 1e-12 && std::abs(y.real()) < 1e-12) continue;
        return false;
      }
      const double r = x.real() / y.real();
      if (ratio && std::abs(r - *ratio) > 1e-7 * std::max(1.0, std::abs(*ratio)))
        return false;
      ratio = r;
      ++compared;
    }
    if (compared < 3 || !ratio) return false;
    return wanted_sign == 0 || (wanted_sign > 0) == (*ratio > 0);
  }

  // ---------------------------------------------------- sets of reals
  // Whether `n` describes a set of real numbers: an interval, a union, an
  // inequality or a chain of them ("1 <= |z| <= 3/2"), "z \in S", "x < 0 or
  // x > 1".
  static bool IsRealSet(const Node& n) {
    switch (n.kind) {
      case Kind::kInterval:
        return true;
      case Kind::kUnion:
        for (const NodeP& a : n.args) {
          // (a, b) in a union is an open interval.
          if (!IsRealSet(*a) &&
              !(a->kind == Kind::kTuple && a->args.size() == 2))
            return false;
        }
        return true;
      case Kind::kRelation:
        if (n.name == "in") return IsRealSet(*n.args[1]);
        return n.name != "=" && IsScalar(*n.args[0]) && IsScalar(*n.args[1]);
      case Kind::kList:
        if (n.name == ",") return false;
        for (const NodeP& a : n.args) {
          if (!IsRealSet(*a)) return false;
        }
        return true;
      default:
        return false;
    }
  }

  // Whether x (the value of `variable`) is in the set; nullopt where a side
  // cannot be evaluated.
  std::optional<bool> Member(const Node& n, const std::string& variable,
                             double x) {
    budget_.Step();
    switch (n.kind) {
      case Kind::kInterval:
      case Kind::kTuple: {
        const Complex lo = Eval(*n.args[0], {}, budget_);
        const Complex hi = Eval(*n.args[1], {}, budget_);
        if (std::isnan(lo.real()) || std::isnan(hi.real())) return std::nullopt;
        const bool above = n.left_closed ? x >= lo.real() : x > lo.real();
        const bool below = n.right_closed ? x <= hi.real() : x < hi.real();
        return above && below;
      }
      case Kind::kUnion:
      case Kind::kList: {
        const bool all = n.kind == Kind::kList && n.name == "and";
        for (const NodeP& a : n.args) {
          std::optional<bool> in = Member(*a, variable, x);
          if (!in) return std::nullopt;
          if (*in != all) return !all;
        }
        return all;
      }
      case Kind::kRelation: {
        if (n.name == "in") return Member(*n.args[1], variable, x);
        Env env;
        if (!variable.empty()) env[variable] = x;
        // With a subject ("f(x)" in 0 < f(x) < 1) the subject takes the value.
        const auto side = [&](const Node& e) {
          if (subject_ != nullptr && SameTree(e, *subject_)) return Complex(x, 0);
          return Eval(e, env, budget_);
        };
        const Complex l = side(*n.args[0]);
        const Complex r = side(*n.args[1]);
        if (std::isnan(l.real()) || std::isnan(r.real()) ||
            std::abs(l.imag()) > 1e-9 || std::abs(r.imag()) > 1e-9)
          return std::nullopt;
        const double a = l.real(), b = r.real();
        const double slack = 1e-12 * std::max({1.0, std::abs(a), std::abs(b)});
        if (n.name == "<") return a < b - slack;
        if (n.name == "<=") return a <= b + slack;
        if (n.name == ">") return a > b + slack;
        if (n.name == ">=") return a >= b - slack;
        if (n.name == "!=") return std::abs(a - b) > slack;
        return std::nullopt;
      }
      default:
        return std::nullopt;
    }
  }

  // Values where a set's membership may change: every constant of the
  // expressions (and its negative, for |x|).
  void Criticals(const Node& n, std::vector<double>* out) {
    std::set<std::string> symbols;
    Symbols(n, &symbols);
    if (symbols.empty() && IsScalar(n)) {
      const Complex v = Eval(n, {}, budget_);
      if (std::isfinite(v.real()) && out->size() < 64) {
        out->push_back(v.real());
        out->push_back(-v.real());
      }
      if (n.kind == Kind::kNumber || n.kind == Kind::kConstant) return;
    }
    for (const NodeP& a : n.args) Criticals(*a, out);
  }

  std::optional<bool> SameRealSet(const Node& gold, const Node& pred) {
    // Two intervals or unions compare by their ends (above).
    const auto plain = [](const Node& n) {
      return n.kind == Kind::kInterval || n.kind == Kind::kUnion;
    };
    if (plain(gold) && plain(pred)) return std::nullopt;
    // An open interval may be written as a pair: (0, 1) against 0 < x < 1.
    const auto as_set = [](const Node& n, const Node& other) {
      return IsRealSet(n) ||
             (n.kind == Kind::kTuple && n.args.size() == 2 &&
              other.kind != Kind::kTuple && IsRealSet(other));
    };
    if (!as_set(gold, pred) || !as_set(pred, gold)) return std::nullopt;
    // A reference written as a set (an interval or union) is not answered by
    // an inequality: math-verify's default (its allow_set_relation_comp),
    // whose test suite asserts it. An inequality reference is answered by an
    // equivalent set.
    const auto is_inequality = [](const Node& n) {
      return (n.kind == Kind::kRelation && n.name != "in") ||
             n.kind == Kind::kList;
    };
    if (!is_inequality(gold) && is_inequality(pred)) return false;
    std::set<std::string> symbols;
    Symbols(gold, &symbols);
    Symbols(pred, &symbols);
    // More than one variable: the set is of one expression compared with
    // constants throughout ("0 < f(x) < 1" against "(0, 1)").
    subject_ = nullptr;
    if (symbols.size() > 1) {
      std::set<std::string> gold_symbols, pred_symbols;
      Symbols(gold, &gold_symbols);
      Symbols(pred, &pred_symbols);
      if (!gold_symbols.empty() && !pred_symbols.empty()) return std::nullopt;
      subject_ = Subject(gold_symbols.empty() ? pred : gold);
      if (subject_ == nullptr) return std::nullopt;
    }
    struct Reset {
      const Node** subject;
      ~Reset() { *subject = nullptr; }
    } reset{&subject_};
    const std::string variable =
        symbols.size() == 1 ? *symbols.begin() : std::string();
    std::vector<double> criticals = {0.0};
    Criticals(gold, &criticals);
    Criticals(pred, &criticals);
    std::sort(criticals.begin(), criticals.end());
    criticals.erase(std::unique(criticals.begin(), criticals.end()),
                    criticals.end());
    std::vector<double> points;
    for (size_t k = 0; k < criticals.size(); ++k) {
      const double c = criticals[k];
      const double delta = 1e-7 * std::max(1.0, std::abs(c));
      points.insert(points.end(), {c, c - delta, c + delta});
      if (k + 1 < criticals.size())
        points.push_back((c + criticals[k + 1]) / 2);
    }
    points.insert(points.end(), {criticals.front() - 1, criticals.back() + 1,
                                 -1e6, 1e6, 0.7310585, -2.2360679, 3.1415926});
    int decided = 0;
    for (double x : points) {
      std::optional<bool> a = Member(gold, variable, x);
      std::optional<bool> b = Member(pred, variable, x);
      if (!a || !b) continue;
      if (*a != *b) return false;
      ++decided;
    }
    if (decided < 3) return std::nullopt;
    return true;
  }

  // The one expression with variables that a relation or chain compares with
  // constants; nullptr when there is none or more than one.
  static const Node* Subject(const Node& n) {
    if (n.kind == Kind::kRelation) {
      std::set<std::string> l, r;
      Symbols(*n.args[0], &l);
      Symbols(*n.args[1], &r);
      if (l.empty() == r.empty()) return nullptr;
      return l.empty() ? n.args[1].get() : n.args[0].get();
    }
    if (n.kind == Kind::kList && n.name != ",") {
      const Node* subject = nullptr;
      for (const NodeP& a : n.args) {
        const Node* s = Subject(*a);
        if (s == nullptr || (subject != nullptr && !SameTree(*s, *subject)))
          return nullptr;
        subject = s;
      }
      return subject;
    }
    return nullptr;
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

  // Set equality: every element of each side equals some element of the
  // other (a repeated element counts once: "(3,17,3,7)" listed twice is one
  // solution).
  bool Unordered(const std::vector<NodeP>& a, const std::vector<NodeP>& b) {
    if (a.empty() != b.empty()) return false;
    if (a.size() > 64 || b.size() > 64)
      throw TooComplex{"too many elements to compare"};
    std::vector<bool> b_covered(b.size(), false);
    for (const NodeP& x : a) {
      bool found = false;
      for (size_t j = 0; j < b.size(); ++j) {
        if (found && b_covered[j]) continue;
        if (Equal(x, b[j])) {
          found = true;
          b_covered[j] = true;
        }
      }
      if (!found) return false;
    }
    return std::all_of(b_covered.begin(), b_covered.end(),
                       [](bool covered) { return covered; });
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
      bool too_large = false;
      const std::optional<Rational> a = Exact(gold, budget_, &too_large);
      const std::optional<Rational> b = Exact(pred, budget_, &too_large);
      if (too_large) {
        // Refused rather than compared in floating point.
        too_large_ = true;
        return false;
      }
      const bool decimal = HasDecimal(gold) || HasDecimal(pred);
      if (a && b) {
        if (*a == *b) return true;
        return decimal && DecimalMatch(*a, *b, RoundingPlaces(gold, pred));
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
    if (compared >= 3) return true;
    // Not evaluable (a sum to n): the same function with equal arguments.
    if (compared == 0 && gold.kind == Kind::kFunction &&
        pred.kind == Kind::kFunction && gold.name == pred.name &&
        gold.args.size() == pred.args.size()) {
      for (size_t i = 0; i < gold.args.size(); ++i) {
        if (!Equal(gold.args[i], pred.args[i])) return false;
      }
      return true;
    }
    return false;
  }

  Budget& budget_;

 public:
  // Whether a value was too large to compare exactly (and so not compared).
  bool too_large() const { return too_large_; }

 private:
  bool too_large_ = false;
  const Node* subject_ = nullptr;  // see SameRealSet
};

// What the answer looks like to a reader, for reasons: its normalized text.
std::string Shown(const std::string& normalized) {
  if (normalized.size() <= 60) return normalized;
  size_t cut = 57;  // not inside a UTF-8 sequence
  while (cut > 0 && (static_cast<unsigned char>(normalized[cut]) & 0xC0) == 0x80)
    --cut;
  return normalized.substr(0, cut) + "...";
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
  // "1 = \zzz = x = 0": the part after the last '=' may still be read.
  const size_t equals = normalized.rfind('=');
  if (equals != std::string::npos && equals + 1 < normalized.size()) {
    try {
      Parser parser(Lex(normalized.substr(equals + 1), budget), budget);
      return parser.ParseAnswer();
    } catch (const ParseError&) {
    }
  }
  // Unparseable: compare as text.
  return Make(Kind::kText, {}, key);
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
  return IsWordy(NormalizeLatex(answer));
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
    Comparer comparer(budget);
    if (comparer.Equal(gold, pred)) {
      result.equal = true;
      return result;
    }
    if (comparer.too_large()) {
      result.reason = absl::StrCat(
          "a value is too large to compare exactly (over ",
          Rational::kMaxBits, " bits)");
    } else if (gold->kind != Kind::kText && pred->kind == Kind::kText &&
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
