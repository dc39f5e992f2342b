#include "reward_service/math/parser.h"

#include <cctype>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "reward_service/math/normalize.h"

namespace microrl::reward::math {
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
      groups.push_back(items.size() == 1 ? items[0]
                                         : Make(Kind::kTuple, items));
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
            "cup",   "pm",  "mp",  "le",     "leq",      "ge",
            "geq",   "lt",  "gt",  "ne",     "neq",      "cdot",
            "times", "div", "end", "approx", "leqslant", "geqslant",
            "ast",   "to",  "in",  "simeq",  "leqq",     "geqq"};
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
    if (point != std::string::npos &&
        text.find_first_of("eE") == std::string::npos)
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
          if (items.size() != 1)
            return Make(Kind::kList, std::move(items), ",");
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

}  // namespace

// Whether an answer is prose rather than mathematics: it has a word of three or
// more letters that is not a function or constant name.
bool IsWordy(const std::string& normalized) {
  static const std::set<std::string> kMath = {
      "sin",     "cos",    "tan",    "cot",     "sec",     "csc",
      "log",     "exp",    "sqrt",   "frac",    "infty",   "pmatrix",
      "bmatrix", "matrix", "begin",  "end",     "cdot",    "times",
      "arcsin",  "arccos", "arctan", "sinh",    "cosh",    "tanh",
      "binom",   "and",    "array",  "vmatrix", "Bmatrix", "smallmatrix",
      "cases",   "mod",    "pmod",   "bmod"};
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

}  // namespace microrl::reward::math
