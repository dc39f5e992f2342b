#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja/builtins.h"
#include "common/tokenizer/jinja/errors.h"
#include "common/tokenizer/jinja/text.h"
#include "common/tokenizer/jinja/values.h"

namespace microrl::tokenizer::jinja {
namespace {

int64_t Length(const Value& v, int line) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(U32(v.as_string()).size());
    case Value::Kind::kList:
      return static_cast<int64_t>(v.list()->size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.dict()->keys.size());
    default:
      Fail(line,
           absl::StrCat("object of type '", TypeName(v), "' has no len()"));
  }
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

Value AttributeOf(const Value& item, const std::string& path, int line) {
  Value current = item;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(
        start, dot == std::string::npos ? std::string::npos : dot - start);
    int64_t index = 0;
    current =
        absl::SimpleAtoi(part, &index) && current.kind() == Value::Kind::kList
            ? GetItem(current, Value(index), line)
            : (current.is_undefined() ? Value()
                                      : GetItem(current, Value(part), line));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return current;
}

}  // namespace

namespace {

// What `input | name(args, kwargs)` passed to a filter.
struct FilterCall {
  const std::string& name;
  const Value& input;
  const std::vector<Value>& args;
  const KwArgs& kwargs;
  Context& ctx;
  int line;

  // The argument at `index`, else the keyword `key`; null when neither.
  const Value* Arg(size_t index, const char* key) const {
    return jinja::Arg(args, kwargs, index, key);
  }
};
using FilterFn = Value (*)(const FilterCall&);

Value TojsonFilter(const FilterCall& call) {
  const Value* indent = call.Arg(0, "indent");
  const Value* sort = call.Arg(3, "sort_keys");
  if (call.Arg(1, "ensure_ascii") != nullptr &&
      call.Arg(1, "ensure_ascii")->Truthy()) {
    Fail(call.line, "tojson(ensure_ascii=True) is not supported");
  }
  if (call.Arg(2, "separators") != nullptr &&
      !call.Arg(2, "separators")->is_none()) {
    Fail(call.line, "tojson(separators=...) is not supported");
  }
  const int width = indent == nullptr || indent->is_none()
                        ? -1
                        : static_cast<int>(indent->as_int());
  return Value(ToJson(call.input, width, sort != nullptr && sort->Truthy()));
}

Value TrimFilter(const FilterCall& call) {
  return Value(Strip(call.input.Str(), call.Arg(0, "chars"), true, true));
}

Value LengthFilter(const FilterCall& call) {
  return Value(Length(call.input, call.line));
}

Value StringFilter(const FilterCall& call) { return Value(call.input.Str()); }

Value CaseFilter(const FilterCall& call) {
  return Value(MapCase(call.input.Str(), call.name == "upper"));
}

Value TitleFilter(const FilterCall& call) {
  return Value(Title(call.input.Str(), call.name == "capitalize"));
}

Value SafeFilter(const FilterCall& call) { return call.input; }

Value EscapeFilter(const FilterCall& call) {
  return Value(HtmlEscape(call.input.Str()));
}

Value DefaultFilter(const FilterCall& call) {
  const Value* fallback = call.Arg(0, "default_value");
  const Value* boolean = call.Arg(1, "boolean");
  const bool use_fallback =
      call.input.is_undefined() ||
      (boolean != nullptr && boolean->Truthy() && !call.input.Truthy());
  return use_fallback ? (fallback != nullptr ? *fallback : Value(""))
                      : call.input;
}

Value FirstOrLastFilter(const FilterCall& call) {
  const List items = Iterate(call.input, call.line);
  if (items.empty()) return Value();
  return call.name == "first" ? items.front() : items.back();
}

Value JoinFilter(const FilterCall& call) {
  const Value* separator = call.Arg(0, "d");
  const Value* attribute = call.Arg(1, "attribute");
  std::string out;
  bool first = true;
  for (const Value& item : Iterate(call.input, call.line)) {
    if (!first) out += separator != nullptr ? separator->Str() : "";
    first = false;
    out +=
        (attribute != nullptr ? AttributeOf(item, attribute->Str(), call.line)
                              : item)
            .Str();
  }
  return Value(out);
}

Value ListFilter(const FilterCall& call) {
  return Value::FromList(Iterate(call.input, call.line));
}

Value ReverseFilter(const FilterCall& call) {
  if (call.input.is_string()) {
    std::u32string text = U32(call.input.as_string());
    std::reverse(text.begin(), text.end());
    return Value(U8(text));
  }
  List items = Iterate(call.input, call.line);
  std::reverse(items.begin(), items.end());
  return Value::FromList(std::move(items));
}

Value ItemsFilter(const FilterCall& call) {
  if (call.input.is_undefined()) return Value::FromList({});
  if (call.input.kind() != Value::Kind::kDict)
    Fail(call.line, "items filter needs a mapping");
  return CallMethod(call.input, "items", call.line).callable()->call({}, {});
}

Value NumberFilter(const FilterCall& call) {
  const Value* fallback = call.Arg(0, "default");
  if (call.input.is_number() || call.input.kind() == Value::Kind::kBool) {
    const double v = call.input.kind() == Value::Kind::kBool
                         ? call.input.as_bool()
                         : call.input.as_float();
    return call.name == "int" ? Value(static_cast<int64_t>(
                                    call.input.kind() == Value::Kind::kInt
                                        ? call.input.as_int()
                                        : static_cast<int64_t>(v)))
                              : Value(v);
  }
  if (call.input.is_string()) {
    const std::string text = Strip(call.input.as_string(), nullptr, true, true);
    int64_t i = 0;
    double f = 0;
    if (call.name == "int" && absl::SimpleAtoi(text, &i)) return Value(i);
    if (absl::SimpleAtod(text, &f))
      return call.name == "int" ? Value(static_cast<int64_t>(f)) : Value(f);
  }
  if (fallback != nullptr) return *fallback;
  return call.name == "int" ? Value(static_cast<int64_t>(0)) : Value(0.0);
}

Value AbsFilter(const FilterCall& call) {
  if (call.input.kind() == Value::Kind::kInt)
    return Value(std::abs(call.input.as_int()));
  if (call.input.kind() == Value::Kind::kFloat)
    return Value(std::fabs(call.input.as_float()));
  Fail(call.line, "abs needs a number");
}

Value RoundFilter(const FilterCall& call) {
  const Value* precision = call.Arg(0, "precision");
  const double scale =
      std::pow(10.0, precision != nullptr ? precision->as_int() : 0);
  return Value(std::round(call.input.as_float() * scale) / scale);
}

Value ReplaceFilter(const FilterCall& call) {
  if (call.args.size() < 2) Fail(call.line, "replace needs two arguments");
  return CallMethod(Value(call.input.Str()), "replace", call.line)
      .callable()
      ->call(call.args, {});
}

Value UniqueFilter(const FilterCall& call) {
  List out;
  for (const Value& item : Iterate(call.input, call.line)) {
    bool seen = false;
    for (const Value& kept : out) seen = seen || Equal(kept, item);
    if (!seen) out.push_back(item);
  }
  return Value::FromList(std::move(out));
}

Value SumFilter(const FilterCall& call) {
  Value total(static_cast<int64_t>(0));
  for (const Value& item : Iterate(call.input, call.line))
    total = Arithmetic("+", total, item, call.line);
  return total;
}

Value OrderFilter(const FilterCall& call) {
  List items = Iterate(call.input, call.line);
  const Value* attribute = call.Arg(call.name == "sort" ? 2 : 1, "attribute");
  const Value* reverse = call.name == "sort" ? call.Arg(0, "reverse") : nullptr;
  auto key = [&](const Value& v) {
    return attribute != nullptr ? AttributeOf(v, attribute->Str(), call.line)
                                : v;
  };
  std::stable_sort(items.begin(), items.end(),
                   [&](const Value& a, const Value& b) {
                     return Compare(key(a), key(b), call.line) < 0;
                   });
  if (reverse != nullptr && reverse->Truthy())
    std::reverse(items.begin(), items.end());
  if (call.name == "sort") return Value::FromList(std::move(items));
  if (items.empty()) return Value();
  return call.name == "min" ? items.front() : items.back();
}

Value MapFilter(const FilterCall& call) {
  const Value* attribute = call.Arg(1000, "attribute");
  List out;
  for (const Value& item : Iterate(call.input, call.line)) {
    if (attribute != nullptr) {
      const Value got = AttributeOf(item, attribute->Str(), call.line);
      const Value* fallback = call.Arg(1000, "default");
      out.push_back(got.is_undefined() && fallback != nullptr ? *fallback
                                                              : got);
    } else {
      if (call.args.empty())
        Fail(call.line, "map needs a filter call.name or attribute=");
      std::vector<Value> rest(call.args.begin() + 1, call.args.end());
      out.push_back(
          ApplyFilter(call.args[0].Str(), item, rest, {}, call.ctx, call.line));
    }
  }
  return Value::FromList(std::move(out));
}

Value SelectFilter(const FilterCall& call) {
  const bool by_attribute =
      call.name == "selectattr" || call.name == "rejectattr";
  const bool keep_when = call.name == "select" || call.name == "selectattr";
  List out;
  for (const Value& item : Iterate(call.input, call.line)) {
    size_t next = 0;
    Value subject = item;
    if (by_attribute) {
      if (call.args.empty())
        Fail(call.line, call.name + " needs an attribute call.name");
      subject = AttributeOf(item, call.args[0].Str(), call.line);
      next = 1;
    }
    bool result;
    if (next < call.args.size()) {
      std::vector<Value> test_args(call.args.begin() + next + 1,
                                   call.args.end());
      result = ApplyTest(call.args[next].Str(), subject, test_args, call.ctx,
                         call.line);
    } else {
      result = subject.Truthy();
    }
    if (result == keep_when) out.push_back(item);
  }
  return Value::FromList(std::move(out));
}

Value IndentFilter(const FilterCall& call) {
  const Value* width = call.Arg(0, "width");
  const Value* first = call.Arg(1, "first");
  const Value* blank = call.Arg(2, "blank");
  const std::string pad(
      width != nullptr ? static_cast<size_t>(width->as_int()) : 4, ' ');
  const std::string text = call.input.Str();
  std::string out;
  size_t start = 0;
  bool first_line = true;
  while (start <= text.size()) {
    const size_t end = text.find('\n', start);
    const std::string line_text = text.substr(
        start, end == std::string::npos ? std::string::npos : end - start);
    const bool indent_this =
        (!first_line || (first != nullptr && first->Truthy())) &&
        (!line_text.empty() || (blank != nullptr && blank->Truthy()));
    out += (indent_this ? pad : "") + line_text;
    if (end == std::string::npos) break;
    out += "\n";
    start = end + 1;
    first_line = false;
  }
  return Value(out);
}

// Filter name -> function (aliases share one).
const std::unordered_map<std::string, FilterFn>& Filters() {
  static const auto* filters = new std::unordered_map<std::string, FilterFn>{
      {"tojson", TojsonFilter},     {"trim", TrimFilter},
      {"length", LengthFilter},     {"count", LengthFilter},
      {"string", StringFilter},     {"lower", CaseFilter},
      {"upper", CaseFilter},        {"title", TitleFilter},
      {"capitalize", TitleFilter},  {"safe", SafeFilter},
      {"e", EscapeFilter},          {"escape", EscapeFilter},
      {"default", DefaultFilter},   {"d", DefaultFilter},
      {"first", FirstOrLastFilter}, {"last", FirstOrLastFilter},
      {"join", JoinFilter},         {"list", ListFilter},
      {"reverse", ReverseFilter},   {"items", ItemsFilter},
      {"int", NumberFilter},        {"float", NumberFilter},
      {"abs", AbsFilter},           {"round", RoundFilter},
      {"replace", ReplaceFilter},   {"unique", UniqueFilter},
      {"sum", SumFilter},           {"min", OrderFilter},
      {"max", OrderFilter},         {"sort", OrderFilter},
      {"map", MapFilter},           {"select", SelectFilter},
      {"reject", SelectFilter},     {"selectattr", SelectFilter},
      {"rejectattr", SelectFilter}, {"indent", IndentFilter},
  };
  return *filters;
}

}  // namespace

Value ApplyFilter(const std::string& name, const Value& input,
                  const std::vector<Value>& args, const KwArgs& kwargs,
                  Context& ctx, int line) {
  const auto it = Filters().find(name);
  if (it == Filters().end()) {
    Fail(line, absl::StrCat("unsupported filter '", name, "'"));
  }
  return it->second({name, input, args, kwargs, ctx, line});
}

namespace {

// What `input is name(args)` passed to a test.
struct TestCall {
  const std::string& name;
  const Value& input;
  const std::vector<Value>& args;
  Context& ctx;
  int line;

  // The test's first argument; Fails without one.
  const Value& NeedArg() const {
    if (args.empty())
      Fail(line, absl::StrCat("test '", name, "' needs an argument"));
    return args[0];
  }
};
using TestFn = bool (*)(const TestCall&);
using K = Value::Kind;

bool EvenOrOddTest(const TestCall& call) {
  if (call.input.kind() != K::kInt) Fail(call.line, "even/odd need an integer");
  return (call.input.as_int() % 2 == 0) == (call.name == "even");
}

bool EqualTest(const TestCall& call) {
  return Equal(call.input, call.NeedArg());
}

bool NotEqualTest(const TestCall& call) {
  return !Equal(call.input, call.NeedArg());
}

bool LessTest(const TestCall& call) {
  return Compare(call.input, call.NeedArg(), call.line) < 0;
}

bool LessOrEqualTest(const TestCall& call) {
  return Compare(call.input, call.NeedArg(), call.line) <= 0;
}

bool GreaterTest(const TestCall& call) {
  return Compare(call.input, call.NeedArg(), call.line) > 0;
}

bool GreaterOrEqualTest(const TestCall& call) {
  return Compare(call.input, call.NeedArg(), call.line) >= 0;
}

bool LowerOrUpperTest(const TestCall& call) {
  return call.input.is_string() &&
         MapCase(call.input.as_string(), call.name == "upper") ==
             call.input.as_string();
}

// Test name -> function (aliases share one).
const std::unordered_map<std::string, TestFn>& Tests() {
  static const auto* tests = new std::unordered_map<std::string, TestFn>{
      {"defined",
       [](const TestCall& call) { return !call.input.is_undefined(); }},
      {"undefined",
       [](const TestCall& call) { return call.input.is_undefined(); }},
      {"none", [](const TestCall& call) { return call.input.is_none(); }},
      {"boolean",
       [](const TestCall& call) { return call.input.kind() == K::kBool; }},
      {"true",
       [](const TestCall& call) {
         return call.input.kind() == K::kBool && call.input.as_bool();
       }},
      {"false",
       [](const TestCall& call) {
         return call.input.kind() == K::kBool && !call.input.as_bool();
       }},
      {"integer",
       [](const TestCall& call) { return call.input.kind() == K::kInt; }},
      {"float",
       [](const TestCall& call) { return call.input.kind() == K::kFloat; }},
      {"number",
       [](const TestCall& call) {
         return call.input.is_number() || call.input.kind() == K::kBool;
       }},
      {"string", [](const TestCall& call) { return call.input.is_string(); }},
      {"mapping",
       [](const TestCall& call) { return call.input.kind() == K::kDict; }},
      {"iterable",
       [](const TestCall& call) {
         return call.input.kind() == K::kList ||
                call.input.kind() == K::kDict || call.input.is_string() ||
                call.input.is_undefined();
       }},
      {"sequence",
       [](const TestCall& call) {
         return call.input.kind() == K::kList ||
                call.input.kind() == K::kDict || call.input.is_string();
       }},
      {"callable",
       [](const TestCall& call) { return call.input.kind() == K::kCallable; }},
      {"even", EvenOrOddTest},
      {"odd", EvenOrOddTest},
      {"divisibleby",
       [](const TestCall& call) {
         const Value n = call.NeedArg();
         if (n.as_int() == 0) Fail(call.line, "division by zero");
         return call.input.as_int() % n.as_int() == 0;
       }},
      {"eq", EqualTest},
      {"equalto", EqualTest},
      {"==", EqualTest},
      {"ne", NotEqualTest},
      {"!=", NotEqualTest},
      {"lt", LessTest},
      {"lessthan", LessTest},
      {"<", LessTest},
      {"le", LessOrEqualTest},
      {"<=", LessOrEqualTest},
      {"gt", GreaterTest},
      {"greaterthan", GreaterTest},
      {">", GreaterTest},
      {"ge", GreaterOrEqualTest},
      {">=", GreaterOrEqualTest},
      {"in",
       [](const TestCall& call) {
         return Contains(call.NeedArg(), call.input, call.line);
       }},
      {"sameas",
       [](const TestCall& call) {
         const Value other = call.NeedArg();
         if (call.input.kind() != other.kind()) return false;
         if (call.input.kind() == K::kList)
           return call.input.list() == other.list();
         if (call.input.kind() == K::kDict)
           return call.input.dict() == other.dict();
         return Equal(call.input, other);
       }},
      {"lower", LowerOrUpperTest},
      {"upper", LowerOrUpperTest},
  };
  return *tests;
}

}  // namespace

bool ApplyTest(const std::string& name, const Value& input,
               const std::vector<Value>& args, Context& ctx, int line) {
  const auto it = Tests().find(name);
  if (it == Tests().end()) {
    Fail(line, absl::StrCat("unsupported test '", name, "'"));
  }
  return it->second({name, input, args, ctx, line});
}

}  // namespace microrl::tokenizer::jinja
