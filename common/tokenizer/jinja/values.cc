#include "common/tokenizer/jinja/values.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja/builtins.h"
#include "common/tokenizer/jinja/errors.h"
#include "common/tokenizer/jinja/text.h"
#include "common/tokenizer/unicode.h"

namespace microrl::tokenizer::jinja {
namespace {

void JsonDump(const Value& v, int indent, bool sort_keys, int depth,
              std::string* out) {
  const std::string newline =
      indent >= 0
          ? "\n" + std::string(static_cast<size_t>(indent) * (depth + 1), ' ')
          : "";
  const std::string close =
      indent >= 0 ? "\n" + std::string(static_cast<size_t>(indent) * depth, ' ')
                  : "";
  const char* item_separator = indent >= 0 ? "," : ", ";
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      *out += "null";
      return;
    case Value::Kind::kBool:
      *out += v.as_bool() ? "true" : "false";
      return;
    case Value::Kind::kInt:
      *out += std::to_string(v.as_int());
      return;
    case Value::Kind::kFloat: {
      const double f = v.as_float();
      *out += std::isnan(f)   ? "NaN"
              : std::isinf(f) ? (f > 0 ? "Infinity" : "-Infinity")
                              : PyFloat(f);
      return;
    }
    case Value::Kind::kString:
      JsonString(v.as_string(), out);
      return;
    case Value::Kind::kCallable:
      Fail(0, "tojson: a function is not JSON serializable");
    case Value::Kind::kList: {
      if (v.list()->empty()) {
        *out += "[]";
        return;
      }
      *out += "[";
      for (size_t i = 0; i < v.list()->size(); ++i) {
        if (i > 0) *out += item_separator;
        *out += newline;
        JsonDump((*v.list())[i], indent, sort_keys, depth + 1, out);
      }
      *out += close + "]";
      return;
    }
    case Value::Kind::kDict: {
      if (v.dict()->keys.empty()) {
        *out += "{}";
        return;
      }
      std::vector<std::string> keys = v.dict()->keys;
      if (sort_keys) std::sort(keys.begin(), keys.end());
      *out += "{";
      for (size_t i = 0; i < keys.size(); ++i) {
        if (i > 0) *out += item_separator;
        *out += newline;
        JsonString(keys[i], out);
        *out += ": ";
        JsonDump(*v.dict()->Find(keys[i]), indent, sort_keys, depth + 1, out);
      }
      *out += close + "}";
      return;
    }
  }
}

}  // namespace

// ------------------------------------------------------------------ Value
Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value::Value(bool b) : kind_(Kind::kBool), b_(b) {}
Value::Value(int64_t i) : kind_(Kind::kInt), i_(i) {}
Value::Value(double f) : kind_(Kind::kFloat), f_(f) {}
Value::Value(std::string s) : kind_(Kind::kString), s_(std::move(s)) {}
Value Value::FromList(List items) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<List>(std::move(items));
  return v;
}
Value Value::FromTuple(List items) {
  Value v = FromList(std::move(items));
  v.tuple_ = true;
  return v;
}
Value Value::FromDict(std::shared_ptr<Dict> dict) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::move(dict);
  return v;
}
Value Value::FromCallable(std::shared_ptr<Callable> callable) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.callable_ = std::move(callable);
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_float:
      return Value(json.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const auto& item : json) items.push_back(FromJson(item));
      return FromList(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto dict = std::make_shared<Dict>();
      for (const auto& [key, item] : json.items())
        dict->Set(key, FromJson(item));
      return FromDict(std::move(dict));
    }
    default:
      return Value();
  }
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return f_ != 0;
    case Kind::kString:
      return !s_.empty();
    case Kind::kList:
      return !list_->empty();
    case Kind::kDict:
      return !dict_->keys.empty();
    case Kind::kCallable:
      return true;
  }
  return false;
}

std::string Value::Str() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return s_;
    default:
      return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return b_ ? "True" : "False";
    case Kind::kInt:
      return std::to_string(i_);
    case Kind::kFloat:
      return PyFloat(f_);
    case Kind::kString:
      return PyRepr(s_);
    case Kind::kList: {
      std::string out = tuple_ ? "(" : "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i > 0) out += ", ";
        out += (*list_)[i].Repr();
      }
      if (tuple_ && list_->size() == 1) out += ",";
      return out + (tuple_ ? ")" : "]");
    }
    case Kind::kDict: {
      if (dict_->is_namespace) return "<Namespace>";
      std::string out = "{";
      for (size_t i = 0; i < dict_->keys.size(); ++i) {
        if (i > 0) out += ", ";
        out += PyRepr(dict_->keys[i]) + ": " +
               dict_->values.at(dict_->keys[i]).Repr();
      }
      return out + "}";
    }
    case Kind::kCallable:
      return "<function " + callable_->name + ">";
  }
  return "";
}

const Value* Dict::Find(const std::string& key) const {
  const auto it = values.find(key);
  return it == values.end() ? nullptr : &it->second;
}

void Dict::Set(const std::string& key, Value value) {
  auto [it, inserted] = values.insert_or_assign(key, std::move(value));
  if (inserted) keys.push_back(key);
}

std::string ToJson(const Value& value, int indent, bool sort_keys) {
  std::string out;
  JsonDump(value, indent, sort_keys, 0, &out);
  return out;
}

// ------------------------------------------------------------------
// equality/order
bool Equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  const bool a_num = a.is_number() || a.kind() == K::kBool;
  const bool b_num = b.is_number() || b.kind() == K::kBool;
  if (a_num && b_num) {
    const double x = a.kind() == K::kBool ? a.as_bool() : a.as_float();
    const double y = b.kind() == K::kBool ? b.as_bool() : b.as_float();
    if (a.kind() == K::kInt && b.kind() == K::kInt)
      return a.as_int() == b.as_int();
    return x == y;
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kUndefined:
    case K::kNone:
      return true;
    case K::kString:
      return a.as_string() == b.as_string();
    case K::kList: {
      if (a.list()->size() != b.list()->size()) return false;
      for (size_t i = 0; i < a.list()->size(); ++i) {
        if (!Equal((*a.list())[i], (*b.list())[i])) return false;
      }
      return true;
    }
    case K::kDict: {
      if (a.dict()->keys.size() != b.dict()->keys.size()) return false;
      for (const std::string& key : a.dict()->keys) {
        const Value* other = b.dict()->Find(key);
        if (other == nullptr || !Equal(*a.dict()->Find(key), *other))
          return false;
      }
      return true;
    }
    case K::kCallable:
      return a.callable() == b.callable();
    default:
      return false;
  }
}

const char* TypeName(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return "str";
    case Value::Kind::kList:
      return "list";
    case Value::Kind::kDict:
      return "dict";
    case Value::Kind::kCallable:
      return "function";
  }
  return "?";
}

// -1, 0, 1; fails for types Python cannot order.
int Compare(const Value& a, const Value& b, int line) {
  if ((a.is_number() || a.kind() == Value::Kind::kBool) &&
      (b.is_number() || b.kind() == Value::Kind::kBool)) {
    const double x =
        a.kind() == Value::Kind::kBool ? a.as_bool() : a.as_float();
    const double y =
        b.kind() == Value::Kind::kBool ? b.as_bool() : b.as_float();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.kind() == Value::Kind::kList && b.kind() == Value::Kind::kList) {
    const size_t n = std::min(a.list()->size(), b.list()->size());
    for (size_t i = 0; i < n; ++i) {
      if (!Equal((*a.list())[i], (*b.list())[i])) {
        return Compare((*a.list())[i], (*b.list())[i], line);
      }
    }
    return a.list()->size() < b.list()->size()
               ? -1
               : (a.list()->size() > b.list()->size());
  }
  Fail(line,
       absl::StrCat("cannot compare ", TypeName(a), " with ", TypeName(b)));
}

// Items of an iterable value, as Python iterates it.
List Iterate(const Value& v, int line) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return *v.list();
    case Value::Kind::kDict: {
      List keys;
      for (const std::string& key : v.dict()->keys) keys.emplace_back(key);
      return keys;
    }
    case Value::Kind::kString: {
      List chars;
      for (char32_t c : U32(v.as_string())) {
        std::string s;
        AppendUtf8(c, &s);
        chars.emplace_back(std::move(s));
      }
      return chars;
    }
    default:
      Fail(line, absl::StrCat("'", TypeName(v), "' object is not iterable"));
  }
}

bool Contains(const Value& container, const Value& item, int line) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        Fail(line, absl::StrCat("'in <string>' requires a string, not ",
                                TypeName(item)));
      }
      return absl::StrContains(container.as_string(), item.as_string());
    case Value::Kind::kList:
      for (const Value& element : *container.list()) {
        if (Equal(element, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      return item.is_string() &&
             container.dict()->Find(item.as_string()) != nullptr;
    default:
      Fail(line, absl::StrCat("argument of type '", TypeName(container),
                              "' is not iterable"));
  }
}

// Python slicing semantics for a sequence of n elements.
std::vector<int64_t> SliceIndices(int64_t n, const Value& start,
                                  const Value& stop, const Value& step_value,
                                  int line) {
  auto given = [](const Value& v) { return !v.is_undefined() && !v.is_none(); };
  int64_t step = given(step_value) ? step_value.as_int() : 1;
  if (step == 0) Fail(line, "slice step cannot be zero");
  auto clamp = [&](const Value& v, int64_t fallback, bool is_start) {
    if (!given(v)) return fallback;
    int64_t i = v.as_int();
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    (void)is_start;
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  const int64_t begin = clamp(start, step > 0 ? 0 : n - 1, true);
  const int64_t end = clamp(stop, step > 0 ? n : -1, false);
  std::vector<int64_t> indices;
  for (int64_t i = begin; step > 0 ? i < end : i > end; i += step)
    indices.push_back(i);
  return indices;
}

// obj.name or obj['name'] (attribute_first decides which Jinja tries first).
Value GetAttribute(const Value& object, const std::string& name,
                   bool attribute_first, int line) {
  if (object.is_undefined())
    Fail(line, absl::StrCat("undefined value has no attribute '", name, "'"));
  if (object.kind() == Value::Kind::kDict) {
    const Value* item = object.dict()->Find(name);
    const bool is_method =
        !object.dict()->is_namespace && (name == "items" || name == "keys" ||
                                         name == "values" || name == "get");
    if (attribute_first && is_method) return CallMethod(object, name, line);
    if (item != nullptr) return *item;
    if (is_method) return CallMethod(object, name, line);
    return Value();
  }
  if (object.is_string() || object.kind() == Value::Kind::kList) {
    return CallMethod(object, name, line);
  }
  if (object.is_none())
    Fail(line, absl::StrCat("'NoneType' object has no attribute '", name, "'"));
  return Value();
}

Value GetItem(const Value& object, const Value& key, int line) {
  if (object.is_undefined()) Fail(line, "cannot index an undefined value");
  if (object.kind() == Value::Kind::kDict) {
    if (!key.is_string()) return Value();
    return GetAttribute(object, key.as_string(), /*attribute_first=*/false,
                        line);
  }
  if (object.kind() == Value::Kind::kList || object.is_string()) {
    if (key.is_string())
      return GetAttribute(object, key.as_string(), true, line);
    if (key.kind() != Value::Kind::kInt && key.kind() != Value::Kind::kBool) {
      Fail(line, absl::StrCat("indices must be integers, not ", TypeName(key)));
    }
    int64_t index =
        key.kind() == Value::Kind::kBool ? key.as_bool() : key.as_int();
    if (object.is_string()) {
      const std::u32string text = U32(object.as_string());
      const int64_t n = static_cast<int64_t>(text.size());
      if (index < 0) index += n;
      if (index < 0 || index >= n) return Value();
      std::string out;
      AppendUtf8(text[index], &out);
      return Value(out);
    }
    const int64_t n = static_cast<int64_t>(object.list()->size());
    if (index < 0) index += n;
    if (index < 0 || index >= n) return Value();  // Jinja: undefined
    return (*object.list())[index];
  }
  if (object.is_none()) Fail(line, "'NoneType' object is not subscriptable");
  Fail(line,
       absl::StrCat("'", TypeName(object), "' object is not subscriptable"));
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value Arithmetic(const std::string& op, const Value& a, const Value& b,
                 int line) {
  auto type_error = [&] {
    Fail(line, absl::StrCat("unsupported operand types for ", op, ": '",
                            TypeName(a), "' and '", TypeName(b), "'"));
  };
  if (a.is_undefined() || b.is_undefined()) {
    Fail(line, absl::StrCat("undefined value in '", op, "' operation"));
  }
  auto numeric = [](const Value& v) {
    return v.is_number() || v.kind() == Value::Kind::kBool;
  };
  auto as_int = [](const Value& v) {
    return v.kind() == Value::Kind::kBool ? static_cast<int64_t>(v.as_bool())
                                          : v.as_int();
  };
  auto as_double = [](const Value& v) {
    return v.kind() == Value::Kind::kBool ? static_cast<double>(v.as_bool())
                                          : v.as_float();
  };
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      // Doubling a string in a loop would otherwise reach gigabytes within
      // the loop limit before any output is checked.
      if (a.as_string().size() + b.as_string().size() > kMaxOutputBytes)
        Fail(line, "string concatenation exceeds 64 MiB");
      return Value(a.as_string() + b.as_string());
    }
    if (a.kind() == Value::Kind::kList && b.kind() == Value::Kind::kList) {
      if (a.list()->size() + b.list()->size() > 1'000'000)
        Fail(line, "list concatenation exceeds 1,000,000 items");
      List out = *a.list();
      out.insert(out.end(), b.list()->begin(), b.list()->end());
      return Value::FromList(std::move(out));
    }
  }
  if (op == "*") {
    const Value* text =
        a.is_string() || a.kind() == Value::Kind::kList
            ? &a
            : (b.is_string() || b.kind() == Value::Kind::kList ? &b : nullptr);
    const Value* count = text == &a ? &b : &a;
    if (text != nullptr && count->kind() == Value::Kind::kInt) {
      const int64_t n = std::max<int64_t>(0, count->as_int());
      if (text->is_string()) {
        if (static_cast<double>(n) * text->as_string().size() > kMaxOutputBytes)
          Fail(line, "repetition too large");
        std::string out;
        for (int64_t i = 0; i < n; ++i) out += text->as_string();
        return Value(out);
      }
      if (static_cast<double>(n) * text->list()->size() > 1'000'000)
        Fail(line, "repetition too large");
      List out;
      for (int64_t i = 0; i < n; ++i)
        out.insert(out.end(), text->list()->begin(), text->list()->end());
      return Value::FromList(std::move(out));
    }
  }
  if (!numeric(a) || !numeric(b)) type_error();
  const bool ints =
      a.kind() != Value::Kind::kFloat && b.kind() != Value::Kind::kFloat;
  // Python's integers do not overflow; a template whose integers leave int64
  // is refused rather than computed wrongly.
  if (ints && (op == "+" || op == "-" || op == "*")) {
    int64_t result = 0;
    const bool overflow =
        op == "+"   ? __builtin_add_overflow(as_int(a), as_int(b), &result)
        : op == "-" ? __builtin_sub_overflow(as_int(a), as_int(b), &result)
                    : __builtin_mul_overflow(as_int(a), as_int(b), &result);
    if (overflow) Fail(line, "integer overflow");
    return Value(result);
  }
  if (op == "+") return Value(as_double(a) + as_double(b));
  if (op == "-") return Value(as_double(a) - as_double(b));
  if (op == "*") return Value(as_double(a) * as_double(b));
  if (op == "/") {
    if (as_double(b) == 0) Fail(line, "division by zero");
    return Value(as_double(a) / as_double(b));
  }
  if (op == "//" || op == "%") {
    if (as_double(b) == 0) Fail(line, "integer division or modulo by zero");
    if (ints) {
      if (as_int(b) == -1 && as_int(a) == std::numeric_limits<int64_t>::min())
        Fail(line, "integer overflow");
      const int64_t q = FloorDiv(as_int(a), as_int(b));
      return op == "//" ? Value(q) : Value(as_int(a) - q * as_int(b));
    }
    const double q = std::floor(as_double(a) / as_double(b));
    return op == "//" ? Value(q) : Value(as_double(a) - q * as_double(b));
  }
  if (op == "**") {
    if (ints && as_int(b) >= 0) {
      int64_t power = 1, base = as_int(a);
      bool overflow = false;
      for (int64_t e = as_int(b); e > 0; e >>= 1) {
        if ((e & 1) != 0)
          overflow |= __builtin_mul_overflow(power, base, &power);
        if (e > 1) overflow |= __builtin_mul_overflow(base, base, &base);
        if (overflow) Fail(line, "integer overflow");
      }
      return Value(power);
    }
    return Value(std::pow(as_double(a), as_double(b)));
  }
  type_error();
  return Value();
}

}  // namespace microrl::tokenizer::jinja
