#ifndef MICRORL_COMMON_TOKENIZER_JINJA_NODES_H_
#define MICRORL_COMMON_TOKENIZER_JINJA_NODES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/tokenizer/jinja.h"
#include "common/tokenizer/jinja/values.h"

// The parsed template: expressions (Expr, evaluated to a Value) and nodes
// (Node, rendered to text) over a Context of variable scopes.
namespace microrl::tokenizer::jinja {

struct Context;

struct Expr {
  explicit Expr(int l) : line(l) {}
  virtual ~Expr() = default;
  virtual Value Eval(Context& ctx) const = 0;
  int line;
};
using ExprPtr = std::unique_ptr<Expr>;

class Node {
 public:
  explicit Node(int l) : line(l) {}
  virtual ~Node() = default;
  virtual void Render(Context& ctx, std::string* out) const = 0;
  int line;
};

using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

enum class LoopControl { kNone, kBreak, kContinue };

// Variables by scope (innermost last). The bottom scope holds the caller's
// variables and the globals.
struct Context {
  std::vector<std::unordered_map<std::string, Value>> scopes;
  LoopControl control = LoopControl::kNone;
  int depth = 0;
  int64_t iterations = 0;

  Value Lookup(const std::string& name) const {
    for (auto it = scopes.rbegin(); it != scopes.rend(); ++it) {
      const auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value();
  }
  void Set(const std::string& name, Value value) {
    scopes.back()[name] = std::move(value);
  }
};

// Renders each node in turn; stops at a {% break %} / {% continue %}.
void RenderBody(const Body& body, Context& ctx, std::string* out);

// ----- expressions
struct Literal : Expr {
  Literal(int l, Value v) : Expr(l), value(std::move(v)) {}
  Value Eval(Context&) const override;
  Value value;
};

struct Name : Expr {
  Name(int l, std::string n) : Expr(l), name(std::move(n)) {}
  Value Eval(Context& ctx) const override;
  std::string name;
};

struct ListExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  std::vector<ExprPtr> items;
  bool tuple = false;
};

struct DictExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};

struct GetAttr : Expr {
  GetAttr(int l, ExprPtr o, std::string n)
      : Expr(l), object(std::move(o)), name(std::move(n)) {}
  Value Eval(Context& ctx) const override;
  ExprPtr object;
  std::string name;
};

struct Subscript : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr object, index, start, stop, step;
  bool is_slice = false;
};

struct CallArgs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;

  void Eval(Context& ctx, std::vector<Value>* args, KwArgs* kwargs) const;

  std::pair<std::vector<Value>, KwArgs> Evaluated(Context& ctx) const;
};

struct Call : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr callee;
  CallArgs args;
};

// `input | name(args)` and `input is name(args)`.
struct Application : Expr {
  using Expr::Expr;
  ExprPtr input;
  std::string name;
  CallArgs args;
};

struct Filter : Application {
  using Application::Application;
  Value Eval(Context& ctx) const override;
};

struct Test : Application {
  using Application::Application;
  Value Eval(Context& ctx) const override;
  bool negated = false;
};

struct Not : Expr {
  Not(int l, ExprPtr o) : Expr(l), operand(std::move(o)) {}
  Value Eval(Context& ctx) const override;
  ExprPtr operand;
};

struct Negate : Expr {
  Negate(int l, ExprPtr o, bool m) : Expr(l), operand(std::move(o)), minus(m) {}
  Value Eval(Context& ctx) const override;
  ExprPtr operand;
  bool minus;
};

struct Logical : Expr {
  Logical(int l, ExprPtr a, ExprPtr b, bool o)
      : Expr(l), left(std::move(a)), right(std::move(b)), is_or(o) {}
  Value Eval(Context& ctx) const override;
  ExprPtr left, right;
  bool is_or;
};

struct Conditional : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr then_value, condition, else_value;
};

struct Binary : Expr {
  Binary(int l, std::string o, ExprPtr a, ExprPtr b)
      : Expr(l), op(std::move(o)), left(std::move(a)), right(std::move(b)) {}
  Value Eval(Context& ctx) const override;
  std::string op;
  ExprPtr left, right;
};

// a < b <= c ...: each comparison on adjacent operands, all must hold.
struct Comparison : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> rest;
};

// ----- statements
struct TextNode : Node {
  TextNode(int l, std::string t) : Node(l), text(std::move(t)) {}
  void Render(Context&, std::string* out) const override;
  std::string text;
};

struct OutputNode : Node {
  OutputNode(int l, ExprPtr e) : Node(l), expr(std::move(e)) {}
  void Render(Context& ctx, std::string* out) const override;
  ExprPtr expr;
};

struct IfNode : Node {
  using Node::Node;
  void Render(Context& ctx, std::string* out) const override;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body else_body;
};

struct ForNode : Node {
  using Node::Node;
  void Render(Context& ctx, std::string* out) const override;

  void Bind(Context& ctx, const Value& item) const;

  std::vector<std::string> targets;
  ExprPtr iterable;
  ExprPtr filter;
  Body body;
  Body else_body;
};

struct SetNode : Node {
  using Node::Node;
  void Render(Context& ctx, std::string*) const override;
  std::string name;
  std::string attribute;  // non-empty: {% set name.attribute = ... %}
  ExprPtr value;
};

struct SetBlockNode : Node {
  using Node::Node;
  void Render(Context& ctx, std::string*) const override;
  std::string name;
  Body body;
};

struct ControlNode : Node {
  ControlNode(int l, LoopControl c) : Node(l), control(c) {}
  void Render(Context& ctx, std::string*) const override;
  LoopControl control;
};

// {% generation %} ... {% endgeneration %}: just the body.
struct BlockNode : Node {
  using Node::Node;
  void Render(Context& ctx, std::string* out) const override;
  Body body;
};

}  // namespace microrl::tokenizer::jinja

#endif  // MICRORL_COMMON_TOKENIZER_JINJA_NODES_H_
