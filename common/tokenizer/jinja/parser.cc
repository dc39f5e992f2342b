#include "common/tokenizer/jinja/parser.h"

#include <set>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja/errors.h"

namespace microrl::tokenizer::jinja {
namespace {

// ------------------------------------------------------------------ parser
class ExprParser {
 public:
  ExprParser(const std::vector<Token>& tokens, int line)
      : tokens_(tokens), line_(line) {}

  ExprPtr ParseAll() {
    ExprPtr e = ParseExpression();
    if (!AtEnd())
      Fail(Peek().line, absl::StrCat("unexpected '", Peek().text, "'"));
    return e;
  }

  bool AtEnd() const { return pos_ >= tokens_.size(); }
  const Token& Peek(size_t ahead = 0) const {
    static const Token kEnd{TokenType::kEnd, "", 0};
    return pos_ + ahead < tokens_.size() ? tokens_[pos_ + ahead] : kEnd;
  }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).type == TokenType::kOp && Peek(ahead).text == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).type == TokenType::kName && Peek(ahead).text == name;
  }
  int Line() const {
    return AtEnd() ? (tokens_.empty() ? line_ : tokens_.back().line)
                   : Peek().line;
  }
  Token Next() {
    if (AtEnd()) Fail(Line(), "unexpected end of expression");
    return tokens_[pos_++];
  }
  void Expect(const char* op) {
    if (!IsOp(op)) {
      Fail(Line(),
           absl::StrCat("expected '", op, "'",
                        AtEnd() ? " at end of tag"
                                : absl::StrCat(", got '", Peek().text, "'")));
    }
    ++pos_;
  }
  std::string ExpectName() {
    if (Peek().type != TokenType::kName) Fail(Line(), "expected a name");
    return Next().text;
  }

  ExprPtr ParseExpression() {
    Depth guard(this);
    ExprPtr value = ParseOr();
    if (IsName("if")) {
      const int line = Next().line;
      auto conditional = std::make_unique<Conditional>(line);
      conditional->then_value = std::move(value);
      conditional->condition = ParseOr();
      if (IsName("else")) {
        ++pos_;
        conditional->else_value = ParseExpression();
      }
      return conditional;
    }
    return value;
  }

  // For `for x in y if cond`: an expression without a conditional.
  ExprPtr ParseOrExpression() { return ParseOr(); }

 private:
  struct Depth {
    explicit Depth(ExprParser* p) : parser(p) {
      if (++parser->depth_ > kMaxDepth)
        Fail(parser->Line(), "expression nested too deeply");
    }
    ~Depth() { --parser->depth_; }
    ExprParser* parser;
  };

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (IsName("or")) {
      const int line = Next().line;
      left = std::make_unique<Logical>(line, std::move(left), ParseAnd(), true);
    }
    return left;
  }
  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (IsName("and")) {
      const int line = Next().line;
      left =
          std::make_unique<Logical>(line, std::move(left), ParseNot(), false);
    }
    return left;
  }
  ExprPtr ParseNot() {
    if (IsName("not")) {
      Depth guard(this);
      const int line = Next().line;
      return std::make_unique<Not>(line, ParseNot());
    }
    return ParseCompare();
  }
  ExprPtr ParseCompare() {
    ExprPtr first = ParseMath1();
    auto comparison = std::make_unique<Comparison>(Line());
    while (true) {
      std::string op;
      if (Peek().type == TokenType::kOp &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" ||
           Peek().text == ">" || Peek().text == "<=" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        ++pos_;
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        pos_ += 2;
        op = "not in";
      } else {
        break;
      }
      comparison->rest.emplace_back(op, ParseMath1());
    }
    if (comparison->rest.empty()) return first;
    comparison->first = std::move(first);
    return comparison;
  }
  ExprPtr ParseMath1() {
    ExprPtr left = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token op = Next();
      left = std::make_unique<Binary>(op.line, op.text, std::move(left),
                                      ParseConcat());
    }
    return left;
  }
  ExprPtr ParseConcat() {
    ExprPtr left = ParseMath2();
    while (IsOp("~")) {
      const Token op = Next();
      left =
          std::make_unique<Binary>(op.line, "~", std::move(left), ParseMath2());
    }
    return left;
  }
  ExprPtr ParseMath2() {
    ExprPtr left = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token op = Next();
      left = std::make_unique<Binary>(op.line, op.text, std::move(left),
                                      ParsePow());
    }
    return left;
  }
  ExprPtr ParsePow() {
    ExprPtr left = ParseUnary(true);
    while (IsOp("**")) {
      const Token op = Next();
      left = std::make_unique<Binary>(op.line, "**", std::move(left),
                                      ParseUnary(true));
    }
    return left;
  }
  ExprPtr ParseUnary(bool with_filter) {
    Depth guard(this);
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const Token op = Next();
      node =
          std::make_unique<Negate>(op.line, ParseUnary(false), op.text == "-");
    } else {
      node = ParsePostfix(ParsePrimary());
    }
    if (with_filter) node = ParseFilters(std::move(node));
    return node;
  }

  ExprPtr ParsePrimary() {
    const Token token = Next();
    switch (token.type) {
      case TokenType::kString: {
        std::string text = token.text;
        while (Peek().type == TokenType::kString)
          text += Next().text;  // "a" "b"
        return std::make_unique<Literal>(token.line, Value(text));
      }
      case TokenType::kInt: {
        int64_t value = 0;
        if (!absl::SimpleAtoi(token.text, &value))
          Fail(token.line, "integer literal too large");
        return std::make_unique<Literal>(token.line, Value(value));
      }
      case TokenType::kFloat:
        return std::make_unique<Literal>(
            token.line, Value(std::strtod(token.text.c_str(), nullptr)));
      case TokenType::kName: {
        const std::string& n = token.text;
        if (n == "true" || n == "True")
          return std::make_unique<Literal>(token.line, Value(true));
        if (n == "false" || n == "False")
          return std::make_unique<Literal>(token.line, Value(false));
        if (n == "none" || n == "None")
          return std::make_unique<Literal>(token.line, Value::None());
        return std::make_unique<Name>(token.line, n);
      }
      case TokenType::kOp:
        if (token.text == "(") {
          if (IsOp(")")) {
            ++pos_;
            auto empty = std::make_unique<ListExpr>(token.line);
            empty->tuple = true;
            return empty;
          }
          ExprPtr first = ParseExpression();
          if (!IsOp(",")) {
            Expect(")");
            return first;
          }
          auto tuple = std::make_unique<ListExpr>(token.line);
          tuple->tuple = true;
          tuple->items.push_back(std::move(first));
          while (IsOp(",")) {
            ++pos_;
            if (IsOp(")")) break;
            tuple->items.push_back(ParseExpression());
          }
          Expect(")");
          return tuple;
        }
        if (token.text == "[") {
          auto list = std::make_unique<ListExpr>(token.line);
          while (!IsOp("]")) {
            list->items.push_back(ParseExpression());
            if (!IsOp(",")) break;
            ++pos_;
          }
          Expect("]");
          return list;
        }
        if (token.text == "{") {
          auto dict = std::make_unique<DictExpr>(token.line);
          while (!IsOp("}")) {
            ExprPtr key = ParseExpression();
            Expect(":");
            dict->items.emplace_back(std::move(key), ParseExpression());
            if (!IsOp(",")) break;
            ++pos_;
          }
          Expect("}");
          return dict;
        }
        break;
      default:
        break;
    }
    Fail(token.line, absl::StrCat("unexpected '", token.text, "'"));
  }

  CallArgs ParseCallArgs() {
    CallArgs args;
    Expect("(");
    while (!IsOp(")")) {
      if (Peek().type == TokenType::kName && IsOp("=", 1)) {
        const std::string name = Next().text;
        ++pos_;
        args.keyword.emplace_back(name, ParseExpression());
      } else {
        if (!args.keyword.empty())
          Fail(Line(), "positional argument after keyword argument");
        args.positional.push_back(ParseExpression());
      }
      if (!IsOp(",")) break;
      ++pos_;
    }
    Expect(")");
    return args;
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".")) {
        const int line = Next().line;
        const Token name = Next();
        if (name.type != TokenType::kName && name.type != TokenType::kInt) {
          Fail(line, "expected an attribute name after '.'");
        }
        if (name.type == TokenType::kInt) {
          auto sub = std::make_unique<Subscript>(line);
          sub->object = std::move(node);
          sub->index = std::make_unique<Literal>(
              line, Value(static_cast<int64_t>(std::stoll(name.text))));
          node = std::move(sub);
        } else {
          node = std::make_unique<GetAttr>(line, std::move(node), name.text);
        }
      } else if (IsOp("[")) {
        const int line = Next().line;
        auto sub = std::make_unique<Subscript>(line);
        sub->object = std::move(node);
        ExprPtr first;
        if (!IsOp(":")) first = ParseExpression();
        if (IsOp(":")) {
          sub->is_slice = true;
          sub->start = std::move(first);
          ++pos_;
          if (!IsOp(":") && !IsOp("]")) sub->stop = ParseExpression();
          if (IsOp(":")) {
            ++pos_;
            if (!IsOp("]")) sub->step = ParseExpression();
          }
        } else {
          sub->index = std::move(first);
        }
        Expect("]");
        node = std::move(sub);
      } else if (IsOp("(")) {
        auto call = std::make_unique<Call>(Line());
        call->callee = std::move(node);
        call->args = ParseCallArgs();
        node = std::move(call);
      } else {
        return node;
      }
    }
  }

  bool StartsPrimary() const {
    const Token& t = Peek();
    if (t.type == TokenType::kString || t.type == TokenType::kInt ||
        t.type == TokenType::kFloat)
      return true;
    if (t.type == TokenType::kName) {
      static const std::set<std::string> kKeywords = {"and", "or", "not", "in",
                                                      "is",  "if", "else"};
      return kKeywords.count(t.text) == 0;
    }
    return t.type == TokenType::kOp && (t.text == "[" || t.text == "{");
  }

  ExprPtr ParseFilters(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        const int line = Next().line;
        auto filter = std::make_unique<Filter>(line);
        filter->input = std::move(node);
        filter->name = ExpectName();
        while (IsOp(".")) {  // dotted filter names
          ++pos_;
          filter->name += "." + ExpectName();
        }
        if (IsOp("(")) filter->args = ParseCallArgs();
        node = std::move(filter);
      } else if (IsName("is")) {
        const int line = Next().line;
        auto test = std::make_unique<Test>(line);
        test->input = std::move(node);
        if (IsName("not")) {
          ++pos_;
          test->negated = true;
        }
        const Token name = Next();
        if (name.type == TokenType::kName) {
          test->name = name.text;
        } else if (name.type == TokenType::kOp &&
                   (name.text == "==" || name.text == "!=" ||
                    name.text == "<" || name.text == ">" || name.text == "<=" ||
                    name.text == ">=")) {
          test->name = name.text;
        } else {
          Fail(line, "expected a test name after 'is'");
        }
        if (IsOp("(")) {
          test->args = ParseCallArgs();
        } else if (StartsPrimary() && test->name != "defined" &&
                   test->name != "none") {
          test->args.positional.push_back(ParsePostfix(ParsePrimary()));
        }
        node = std::move(test);
      } else {
        return node;
      }
    }
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  int line_;
  int depth_ = 0;
};

class Parser {
 public:
  explicit Parser(std::vector<Piece> pieces) : pieces_(std::move(pieces)) {}

  Body ParseTemplate() {
    std::string end;
    Body body = ParseBody({}, &end);
    return body;
  }

 private:
  // Parses until a statement whose keyword is in `ends`; stores it in *end and
  // leaves its tokens (after the keyword) for the caller via last_.
  Body ParseBody(const std::set<std::string>& ends, std::string* end) {
    Body body;
    while (pos_ < pieces_.size()) {
      Piece& piece = pieces_[pos_++];
      if (piece.kind == Piece::kText) {
        body.push_back(
            std::make_unique<TextNode>(piece.line, std::move(piece.text)));
        continue;
      }
      if (piece.kind == Piece::kExpr) {
        if (piece.tokens.empty()) Fail(piece.line, "empty expression");
        ExprParser parser(piece.tokens, piece.line);
        body.push_back(
            std::make_unique<OutputNode>(piece.line, parser.ParseAll()));
        continue;
      }
      if (piece.tokens.empty() || piece.tokens[0].type != TokenType::kName) {
        Fail(piece.line, "expected a statement name");
      }
      const std::string keyword = piece.tokens[0].text;
      if (ends.count(keyword) != 0) {
        *end = keyword;
        last_ = &piece;
        return body;
      }
      if (absl::StartsWith(keyword, "end") || keyword == "elif" ||
          keyword == "else") {
        Fail(piece.line,
             absl::StrCat("unexpected '", keyword, "'",
                          ends.empty() ? ""
                                       : absl::StrCat(" (expected '",
                                                      *ends.rbegin(), "')")));
      }
      body.push_back(ParseStatement(piece, keyword));
    }
    if (!ends.empty()) {
      Fail(pieces_.empty() ? 1 : pieces_.back().line,
           absl::StrCat("unexpected end of template: expected '",
                        *ends.rbegin(), "'"));
    }
    return body;
  }

  // The body after an {% else %} (which takes no arguments), up to `end`.
  Body ParseElse(const std::string& end) {
    ExpectNothing(*last_);
    std::string found;
    return ParseBody({end}, &found);
  }

  NodePtr ParseStatement(Piece& piece, const std::string& keyword) {
    const int line = piece.line;
    const std::vector<Token> rest(piece.tokens.begin() + 1, piece.tokens.end());
    if (keyword == "if") {
      auto node = std::make_unique<IfNode>(line);
      ExprParser condition(rest, line);
      ExprPtr cond = condition.ParseAll();
      while (true) {
        std::string end;
        Body body = ParseBody({"elif", "else", "endif"}, &end);
        node->branches.emplace_back(std::move(cond), std::move(body));
        if (end == "elif") {
          const std::vector<Token> tokens(last_->tokens.begin() + 1,
                                          last_->tokens.end());
          ExprParser next(tokens, last_->line);
          cond = next.ParseAll();
          continue;
        }
        if (end == "else") node->else_body = ParseElse("endif");
        ExpectNothing(*last_);
        return node;
      }
    }
    if (keyword == "for") {
      auto node = std::make_unique<ForNode>(line);
      ExprParser parser(rest, line);
      node->targets.push_back(parser.ExpectName());
      while (parser.IsOp(",")) {
        parser.Next();
        node->targets.push_back(parser.ExpectName());
      }
      if (!parser.IsName("in")) Fail(line, "expected 'in' in for statement");
      parser.Next();
      node->iterable = parser.ParseOrExpression();
      if (parser.IsName("if")) {
        parser.Next();
        node->filter = parser.ParseOrExpression();
      }
      if (parser.IsName("recursive"))
        Fail(line, "recursive for loops are not supported");
      if (!parser.AtEnd())
        Fail(line, absl::StrCat("unexpected '", parser.Peek().text, "'"));
      std::string end;
      node->body = ParseBody({"else", "endfor"}, &end);
      if (end == "else") node->else_body = ParseElse("endfor");
      ExpectNothing(*last_);
      return node;
    }
    if (keyword == "set") {
      ExprParser parser(rest, line);
      const std::string name = parser.ExpectName();
      std::string attribute;
      if (parser.IsOp(".")) {
        parser.Next();
        attribute = parser.ExpectName();
      }
      if (parser.IsOp(","))
        Fail(line, "tuple assignment in set is not supported");
      if (parser.AtEnd() && attribute.empty()) {
        auto node = std::make_unique<SetBlockNode>(line);
        node->name = name;
        std::string end;
        node->body = ParseBody({"endset"}, &end);
        ExpectNothing(*last_);
        return node;
      }
      parser.Expect("=");
      auto node = std::make_unique<SetNode>(line);
      node->name = name;
      node->attribute = attribute;
      node->value = parser.ParseExpression();
      if (!parser.AtEnd())
        Fail(line, absl::StrCat("unexpected '", parser.Peek().text, "'"));
      return node;
    }
    if (keyword == "break" || keyword == "continue") {
      ExpectNothing(piece);
      return std::make_unique<ControlNode>(line, keyword == "break"
                                                     ? LoopControl::kBreak
                                                     : LoopControl::kContinue);
    }
    if (keyword == "generation") {
      ExpectNothing(piece);
      auto node = std::make_unique<BlockNode>(line);
      std::string end;
      node->body = ParseBody({"endgeneration"}, &end);
      ExpectNothing(*last_);
      return node;
    }
    Fail(line, absl::StrCat("unsupported statement '", keyword, "'"));
  }

  static void ExpectNothing(const Piece& piece) {
    if (piece.tokens.size() > 1) {
      Fail(piece.line, absl::StrCat("unexpected '", piece.tokens[1].text,
                                    "' after '", piece.tokens[0].text, "'"));
    }
  }

  std::vector<Piece> pieces_;
  size_t pos_ = 0;
  Piece* last_ = nullptr;
};

}  // namespace

Body ParseNodes(std::vector<Piece> pieces) {
  return Parser(std::move(pieces)).ParseTemplate();
}

}  // namespace microrl::tokenizer::jinja
