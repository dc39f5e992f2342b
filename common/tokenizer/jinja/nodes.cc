#include "common/tokenizer/jinja/nodes.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja/builtins.h"
#include "common/tokenizer/jinja/errors.h"
#include "common/tokenizer/jinja/text.h"

namespace microrl::tokenizer::jinja {

void RenderBody(const Body& body, Context& ctx, std::string* out) {
  for (const NodePtr& node : body) {
    node->Render(ctx, out);
    if (ctx.control != LoopControl::kNone) return;
    if (out->size() > kMaxOutputBytes)
      Fail(node->line, "output exceeds 64 MiB");
  }
}

Value Literal::Eval(Context&) const { return value; }

Value Name::Eval(Context& ctx) const { return ctx.Lookup(name); }

Value ListExpr::Eval(Context& ctx) const {
  List values;
  for (const ExprPtr& item : items) values.push_back(item->Eval(ctx));
  return tuple ? Value::FromTuple(std::move(values))
               : Value::FromList(std::move(values));
}

Value DictExpr::Eval(Context& ctx) const {
  auto dict = std::make_shared<Dict>();
  for (const auto& [key, value] : items) {
    const Value k = key->Eval(ctx);
    if (!k.is_string()) Fail(line, "dict keys must be strings");
    dict->Set(k.as_string(), value->Eval(ctx));
  }
  return Value::FromDict(std::move(dict));
}

Value GetAttr::Eval(Context& ctx) const {
  return GetAttribute(object->Eval(ctx), name, /*attribute_first=*/true, line);
}

Value Subscript::Eval(Context& ctx) const {
  const Value value = object->Eval(ctx);
  if (!is_slice) return GetItem(value, index->Eval(ctx), line);
  const Value a = start ? start->Eval(ctx) : Value();
  const Value b = stop ? stop->Eval(ctx) : Value();
  const Value c = step ? step->Eval(ctx) : Value();
  for (const Value* bound : {&a, &b, &c}) {
    if (!bound->is_undefined() && !bound->is_none() &&
        bound->kind() != Value::Kind::kInt) {
      Fail(line, "slice indices must be integers or None");
    }
  }
  if (value.is_string()) {
    const std::u32string text = U32(value.as_string());
    std::u32string out;
    for (int64_t i :
         SliceIndices(static_cast<int64_t>(text.size()), a, b, c, line)) {
      out.push_back(text[i]);
    }
    return Value(U8(out));
  }
  if (value.kind() == Value::Kind::kList) {
    List out;
    for (int64_t i : SliceIndices(static_cast<int64_t>(value.list()->size()), a,
                                  b, c, line)) {
      out.push_back((*value.list())[i]);
    }
    return Value::FromList(std::move(out));
  }
  if (value.is_undefined()) Fail(line, "cannot slice an undefined value");
  Fail(line, absl::StrCat("'", TypeName(value), "' object cannot be sliced"));
}

void CallArgs::Eval(Context& ctx, std::vector<Value>* args,
                    KwArgs* kwargs) const {
  for (const ExprPtr& arg : positional) args->push_back(arg->Eval(ctx));
  for (const auto& [name, arg] : keyword)
    kwargs->emplace_back(name, arg->Eval(ctx));
}

std::pair<std::vector<Value>, KwArgs> CallArgs::Evaluated(Context& ctx) const {
  std::pair<std::vector<Value>, KwArgs> out;
  Eval(ctx, &out.first, &out.second);
  return out;
}

Value Call::Eval(Context& ctx) const {
  const Value function = callee->Eval(ctx);
  if (function.kind() != Value::Kind::kCallable) {
    if (function.is_undefined()) {
      const auto* name = dynamic_cast<const Name*>(callee.get());
      Fail(line, absl::StrCat("'", name != nullptr ? name->name : "value",
                              "' is undefined and cannot be called"));
    }
    Fail(line,
         absl::StrCat("'", TypeName(function), "' object is not callable"));
  }
  std::vector<Value> values;
  KwArgs kwargs;
  args.Eval(ctx, &values, &kwargs);
  try {
    return function.callable()->call(values, kwargs);
  } catch (const Error& e) {
    throw Error{e.line == 0 ? line : e.line, e.message};
  }
}

Value Filter::Eval(Context& ctx) const {
  const auto [values, kwargs] = args.Evaluated(ctx);
  return ApplyFilter(name, input->Eval(ctx), values, kwargs, ctx, line);
}

Value Test::Eval(Context& ctx) const {
  const std::vector<Value> values = args.Evaluated(ctx).first;
  return Value(ApplyTest(name, input->Eval(ctx), values, ctx, line) != negated);
}

Value Not::Eval(Context& ctx) const {
  return Value(!operand->Eval(ctx).Truthy());
}

Value Negate::Eval(Context& ctx) const {
  const Value v = operand->Eval(ctx);
  if (v.kind() == Value::Kind::kInt) {
    if (minus && v.as_int() == std::numeric_limits<int64_t>::min())
      Fail(line, "integer overflow");
    return Value(minus ? -v.as_int() : v.as_int());
  }
  if (v.kind() == Value::Kind::kFloat)
    return Value(minus ? -v.as_float() : v.as_float());
  if (v.kind() == Value::Kind::kBool)
    return Value(static_cast<int64_t>(minus ? -v.as_bool() : v.as_bool()));
  Fail(line, absl::StrCat("bad operand type for unary ", minus ? "-" : "+",
                          ": '", TypeName(v), "'"));
}

Value Logical::Eval(Context& ctx) const {
  Value a = left->Eval(ctx);
  if (is_or ? a.Truthy() : !a.Truthy()) return a;
  return right->Eval(ctx);
}

Value Conditional::Eval(Context& ctx) const {
  if (condition->Eval(ctx).Truthy()) return then_value->Eval(ctx);
  return else_value ? else_value->Eval(ctx) : Value();
}

Value Binary::Eval(Context& ctx) const {
  const Value a = left->Eval(ctx);
  const Value b = right->Eval(ctx);
  if (op == "~") {
    std::string left_text = a.Str();
    const std::string right_text = b.Str();
    if (left_text.size() + right_text.size() > kMaxOutputBytes)
      Fail(line, "string concatenation exceeds 64 MiB");
    return Value(std::move(left_text) + right_text);
  }
  return Arithmetic(op, a, b, line);
}

Value Comparison::Eval(Context& ctx) const {
  Value left = first->Eval(ctx);
  for (const auto& [op, expr] : rest) {
    const Value right = expr->Eval(ctx);
    bool ok;
    if (op == "==") {
      ok = Equal(left, right);
    } else if (op == "!=") {
      ok = !Equal(left, right);
    } else if (op == "in") {
      ok = Contains(right, left, line);
    } else if (op == "not in") {
      ok = !Contains(right, left, line);
    } else {
      const int c = Compare(left, right, line);
      ok = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
    }
    if (!ok) return Value(false);
    left = right;
  }
  return Value(true);
}

void TextNode::Render(Context&, std::string* out) const { *out += text; }

void OutputNode::Render(Context& ctx, std::string* out) const {
  *out += expr->Eval(ctx).Str();
}

void IfNode::Render(Context& ctx, std::string* out) const {
  for (const auto& [condition, body] : branches) {
    if (condition->Eval(ctx).Truthy()) {
      RenderBody(body, ctx, out);
      return;
    }
  }
  RenderBody(else_body, ctx, out);
}

void ForNode::Render(Context& ctx, std::string* out) const {
  const List all = Iterate(iterable->Eval(ctx), line);
  List items;
  for (const Value& item : all) {
    if (filter == nullptr) {
      items.push_back(item);
      continue;
    }
    ctx.scopes.emplace_back();
    Bind(ctx, item);
    const bool keep = filter->Eval(ctx).Truthy();
    ctx.scopes.pop_back();
    if (keep) items.push_back(item);
  }
  if (items.empty()) {
    RenderBody(else_body, ctx, out);
    return;
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    if (++ctx.iterations > kMaxLoopIterations)
      Fail(line, "too many loop iterations");
    auto loop = std::make_shared<Dict>();
    loop->Set("index", Value(i + 1));
    loop->Set("index0", Value(i));
    loop->Set("revindex", Value(n - i));
    loop->Set("revindex0", Value(n - i - 1));
    loop->Set("first", Value(i == 0));
    loop->Set("last", Value(i == n - 1));
    loop->Set("length", Value(n));
    loop->Set("depth", Value(static_cast<int64_t>(1)));
    loop->Set("depth0", Value(static_cast<int64_t>(0)));
    loop->Set("previtem", i > 0 ? items[i - 1] : Value());
    loop->Set("nextitem", i + 1 < n ? items[i + 1] : Value());
    auto cycle = std::make_shared<Callable>();
    cycle->name = "loop.cycle";
    cycle->call = [i, this](const std::vector<Value>& args, const KwArgs&) {
      if (args.empty()) Fail(line, "loop.cycle needs at least one value");
      return args[i % args.size()];
    };
    loop->Set("cycle", Value::FromCallable(cycle));
    ctx.scopes.emplace_back();
    ctx.Set("loop", Value::FromDict(loop));
    Bind(ctx, items[i]);
    RenderBody(body, ctx, out);
    ctx.scopes.pop_back();
    const LoopControl control = ctx.control;
    ctx.control = LoopControl::kNone;
    if (control == LoopControl::kBreak) break;
  }
}

void ForNode::Bind(Context& ctx, const Value& item) const {
  if (targets.size() == 1) {
    ctx.Set(targets[0], item);
    return;
  }
  const List parts = Iterate(item, line);
  if (parts.size() != targets.size()) {
    Fail(line, absl::StrCat("cannot unpack ", parts.size(), " values into ",
                            targets.size(), " names"));
  }
  for (size_t k = 0; k < targets.size(); ++k) ctx.Set(targets[k], parts[k]);
}

void SetNode::Render(Context& ctx, std::string*) const {
  Value v = value->Eval(ctx);
  if (attribute.empty()) {
    ctx.Set(name, std::move(v));
    return;
  }
  const Value object = ctx.Lookup(name);
  if (object.kind() != Value::Kind::kDict || !object.dict()->is_namespace) {
    Fail(line, absl::StrCat("cannot assign attribute on non-namespace object '",
                            name, "'"));
  }
  object.dict()->Set(attribute, std::move(v));
}

void SetBlockNode::Render(Context& ctx, std::string*) const {
  std::string captured;
  RenderBody(body, ctx, &captured);
  ctx.Set(name, Value(captured));
}

void ControlNode::Render(Context& ctx, std::string*) const {
  ctx.control = control;
}

void BlockNode::Render(Context& ctx, std::string* out) const {
  RenderBody(body, ctx, out);
}

}  // namespace microrl::tokenizer::jinja
