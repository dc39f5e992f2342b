#include "common/tokenizer/jinja.h"

#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/unicode.h"

namespace microrl::tokenizer::jinja {
namespace {

// ------------------------------------------------------------------ errors
// Rendering and parsing report errors by throwing; Template catches at its API.
struct Error {
  int line;
  std::string message;
};
[[noreturn]] void Fail(int line, std::string message) {
  throw Error{line, std::move(message)};
}

// A {{ raise_exception(...) }} from the template itself.
struct Raised {
  std::string message;
};

constexpr size_t kMaxOutputBytes = 64 << 20;
constexpr int64_t kMaxLoopIterations = 100'000;
constexpr int kMaxDepth = 200;

// ------------------------------------------------------------------ text
// helpers
bool IsPySpace(char32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 ||
         c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

std::u32string U32(const std::string& s) { return DecodeUtf8(s); }
std::string U8(const std::u32string& s) { return EncodeUtf8(s); }

// Python str.strip/lstrip/rstrip with an optional set of characters.
std::string Strip(const std::string& s, const Value* chars, bool left,
                  bool right) {
  const std::u32string text = U32(s);
  std::u32string set;
  const bool whitespace =
      chars == nullptr || chars->is_none() || chars->is_undefined();
  if (!whitespace) set = U32(chars->Str());
  auto strip = [&](char32_t c) {
    return whitespace ? IsPySpace(c) : set.find(c) != std::u32string::npos;
  };
  size_t begin = 0, end = text.size();
  if (left) {
    while (begin < end && strip(text[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strip(text[end - 1])) --end;
  }
  return U8(text.substr(begin, end - begin));
}

// Python's str.upper()/lower(): simple case mapping plus the full
// (multi-character) mappings of SpecialCasing.txt that are not
// language-specific.
std::string MapCase(const std::string& s, bool upper) {
  static const std::map<char32_t, std::u32string> kUpper = {
      {0x00DF, U"SS"},      {0x0149, U"\u02BCN"},
      {0x01F0, U"J\u030C"}, {0x0587, U"\u0535\u0552"},
      {0x1E96, U"H\u0331"}, {0x1E97, U"T\u0308"},
      {0x1E98, U"W\u030A"}, {0x1E99, U"Y\u030A"},
      {0x1E9A, U"A\u02BE"}, {0xFB00, U"FF"},
      {0xFB01, U"FI"},      {0xFB02, U"FL"},
      {0xFB03, U"FFI"},     {0xFB04, U"FFL"},
      {0xFB05, U"ST"},      {0xFB06, U"ST"}};
  std::u32string out;
  for (char32_t c : U32(s)) {
    if (upper) {
      const auto it = kUpper.find(c);
      if (it != kUpper.end()) {
        out += it->second;
        continue;
      }
      out.push_back(static_cast<char32_t>(
          utf8proc_toupper(static_cast<utf8proc_int32_t>(c))));
    } else if (c == 0x0130) {
      out += U"i\u0307";
    } else {
      out.push_back(static_cast<char32_t>(
          utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return U8(out);
}

bool IsCased(char32_t c) {
  return utf8proc_toupper(static_cast<utf8proc_int32_t>(c)) !=
             static_cast<utf8proc_int32_t>(c) ||
         utf8proc_tolower(static_cast<utf8proc_int32_t>(c)) !=
             static_cast<utf8proc_int32_t>(c);
}

// Python's shortest round-trip float repr.
std::string PyFloat(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buffer[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*e", precision - 1, v);
    if (std::strtod(buffer, nullptr) == v) break;
  }
  std::string text = buffer;
  const bool negative = text[0] == '-';
  if (negative) text.erase(0, 1);
  const size_t e = text.find('e');
  const int exponent = std::atoi(text.c_str() + e + 1);
  std::string digits = text.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      if (static_cast<int>(digits.size()) <= exponent + 1) {
        out += digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
      } else {
        out +=
            digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
      }
    } else {
      out += "0." + std::string(-exponent - 1, '0') + digits;
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exp[8];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+',
                  std::abs(exponent));
    out += exp;
  }
  return out;
}

std::string PyRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : U32(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0)) {
      char buffer[8];
      std::snprintf(buffer, sizeof(buffer), "\\x%02x",
                    static_cast<unsigned>(c));
      out += buffer;
    } else {
      AppendUtf8(c, &out);
    }
  }
  out.push_back(quote);
  return out;
}

void JsonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          *out += buffer;
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

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

namespace {

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

// ------------------------------------------------------------------ lexer
enum class TokenType { kName, kString, kInt, kFloat, kOp, kEnd };

struct Token {
  TokenType type;
  std::string text;
  int line;
};

// One piece of template source: text, or the tokens of a {{ }} / {% %} tag.
struct Piece {
  enum Kind { kText, kExpr, kStmt } kind;
  std::string text;           // kText
  std::vector<Token> tokens;  // kExpr, kStmt
  int line;
};

bool IsNameStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}
bool IsNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

// Jinja2 (via Python's splitlines) turns every line break into "\n" and drops
// one trailing line break when keep_trailing_newline is off, as transformers
// leaves it.
std::string NormalizeNewlines(absl::string_view source) {
  std::string out;
  std::u32string text = U32(std::string(source));
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    const bool breaks = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c ||
                        c == 0x1c || c == 0x1d || c == 0x1e || c == 0x85 ||
                        c == 0x2028 || c == 0x2029;
    if (breaks) {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (i + 1 == text.size()) break;  // the trailing line break
      out.push_back('\n');
    } else {
      AppendUtf8(c, &out);
    }
  }
  return out;
}

// Strips Python whitespace from the end (right) or start of `s`.
void StripSpace(std::string* s, bool at_end) {
  std::u32string text = U32(*s);
  if (at_end) {
    while (!text.empty() && IsPySpace(text.back())) text.pop_back();
  } else {
    size_t i = 0;
    while (i < text.size() && IsPySpace(text[i])) ++i;
    text.erase(0, i);
  }
  *s = U8(text);
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  std::vector<Piece> Run() {
    std::vector<Piece> pieces;
    bool strip_next = false;  // the previous tag ended with '-'
    size_t pos = 0;
    while (pos < src_.size()) {
      const size_t open = FindTag(pos);
      std::string text = src_.substr(pos, open - pos);
      if (strip_next) StripSpace(&text, /*at_end=*/false);
      strip_next = false;
      if (open == src_.size()) {
        AddText(&pieces, std::move(text), LineAt(pos));
        break;
      }
      const char kind = src_[open + 1];  // '{', '%' or '#'
      size_t p = open + 2;
      char modifier = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+'))
        modifier = src_[p++];
      if (modifier == '-') {
        StripSpace(&text, /*at_end=*/true);
      } else if (modifier != '+' && kind != '{') {
        // lstrip_blocks: a block or comment tag alone after indentation.
        size_t back = open;
        while (back > pos && (src_[back - 1] == ' ' || src_[back - 1] == '\t'))
          --back;
        // (What a '-' of the previous tag stripped is not there to strip.)
        if (back == 0 || src_[back - 1] == '\n')
          text.resize(text.size() - std::min(text.size(), open - back));
      }
      AddText(&pieces, std::move(text), LineAt(pos));
      const int line = LineAt(open);
      if (kind == '#') {
        const size_t close = src_.find("#}", p);
        if (close == std::string::npos) Fail(line, "unclosed comment");
        strip_next = close > p && src_[close - 1] == '-';
        pos = close + 2;
        TrimBlock(close, &pos);
        continue;
      }
      Piece piece{kind == '{' ? Piece::kExpr : Piece::kStmt, "", {}, line};
      const char* closing = kind == '{' ? "}}" : "%}";
      pos = LexTag(p, closing, &piece.tokens, &strip_next);
      if (kind == '%') TrimBlock(pos - 2, &pos);
      pieces.push_back(std::move(piece));
    }
    return pieces;
  }

 private:
  size_t FindTag(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' &&
          (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return src_.size();
  }

  int LineAt(size_t pos) const {
    return 1 +
           static_cast<int>(std::count(src_.begin(), src_.begin() + pos, '\n'));
  }

  static void AddText(std::vector<Piece>* pieces, std::string text, int line) {
    if (!text.empty())
      pieces->push_back({Piece::kText, std::move(text), {}, line});
  }

  // trim_blocks: drop one newline right after a block or comment tag, unless
  // the tag ended with '+'. `close` is where "%}" / "#}" starts.
  void TrimBlock(size_t close, size_t* pos) const {
    if (close > 0 && src_[close - 1] == '+') return;
    if (*pos < src_.size() && src_[*pos] == '\n') ++*pos;
  }

  // Lexes expression tokens from `p` up to `closing`; returns the position
  // after it.
  size_t LexTag(size_t p, const char* closing, std::vector<Token>* tokens,
                bool* strip_next) {
    const int start_line = LineAt(p);
    int depth =
        0;  // open ( [ { inside the tag: "}}" closes the tag only at depth 0
    while (true) {
      while (p < src_.size() &&
             std::isspace(static_cast<unsigned char>(src_[p])))
        ++p;
      if (p >= src_.size())
        Fail(start_line,
             absl::StrCat("unclosed tag (expected '", closing, "')"));
      const int line = LineAt(p);
      if (depth == 0 && src_.compare(p, 2, closing) == 0) return p + 2;
      if (depth == 0 && (src_[p] == '-' || src_[p] == '+') &&
          src_.compare(p + 1, 2, closing) == 0) {
        *strip_next = src_[p] == '-';
        return p + 3;
      }
      if (src_[p] == '(' || src_[p] == '[' || src_[p] == '{') ++depth;
      if ((src_[p] == ')' || src_[p] == ']' || src_[p] == '}') && depth > 0)
        --depth;
      const char c = src_[p];
      if (IsNameStart(c)) {
        size_t end = p;
        while (end < src_.size() && IsNameChar(src_[end])) ++end;
        tokens->push_back({TokenType::kName, src_.substr(p, end - p), line});
        p = end;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t end = p;
        bool is_float = false;
        while (end < src_.size() &&
               (std::isdigit(static_cast<unsigned char>(src_[end])) ||
                src_[end] == '_')) {
          ++end;
        }
        if (end + 1 < src_.size() && src_[end] == '.' &&
            std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
          is_float = true;
          ++end;
          while (end < src_.size() &&
                 std::isdigit(static_cast<unsigned char>(src_[end])))
            ++end;
        }
        if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
          size_t e = end + 1;
          if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
          if (e < src_.size() &&
              std::isdigit(static_cast<unsigned char>(src_[e]))) {
            is_float = true;
            end = e;
            while (end < src_.size() &&
                   std::isdigit(static_cast<unsigned char>(src_[end])))
              ++end;
          }
        }
        std::string number = src_.substr(p, end - p);
        number.erase(std::remove(number.begin(), number.end(), '_'),
                     number.end());
        tokens->push_back(
            {is_float ? TokenType::kFloat : TokenType::kInt, number, line});
        p = end;
      } else if (c == '\'' || c == '"') {
        tokens->push_back({TokenType::kString, LexString(&p, line), line});
      } else {
        static const char* kTwo[] = {"==", "!=", ">=", "<=", "//", "**"};
        bool matched = false;
        for (const char* op : kTwo) {
          if (src_.compare(p, 2, op) == 0) {
            tokens->push_back({TokenType::kOp, op, line});
            p += 2;
            matched = true;
            break;
          }
        }
        if (matched) continue;
        if (std::string("+-*/%~<>=()[]{},.:|").find(c) == std::string::npos) {
          Fail(line,
               absl::StrCat("unexpected character '", std::string(1, c), "'"));
        }
        tokens->push_back({TokenType::kOp, std::string(1, c), line});
        ++p;
      }
    }
  }

  // A quoted string literal with Python escapes; advances *p past it.
  std::string LexString(size_t* p, int line) {
    const char quote = src_[(*p)++];
    std::string out;
    while (true) {
      if (*p >= src_.size()) Fail(line, "unterminated string literal");
      const char c = src_[(*p)++];
      if (c == quote) return out;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (*p >= src_.size()) Fail(line, "unterminated string literal");
      const char e = src_[(*p)++];
      switch (e) {
        case 'n':
          out.push_back('\n');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case '0':
          out.push_back('\0');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case '\n':
          break;
        case 'x':
        case 'u':
        case 'U': {
          const int digits = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          if (*p + digits > src_.size())
            Fail(line, "bad escape in string literal");
          uint32_t cp = 0;
          if (!absl::SimpleHexAtoi(src_.substr(*p, digits), &cp)) {
            Fail(line, "bad escape in string literal");
          }
          *p += digits;
          AppendUtf8(cp, &out);
          break;
        }
        default:
          out.push_back('\\');
          out.push_back(e);
      }
    }
  }

  const std::string src_;
};

// ------------------------------------------------------------------ AST
struct Context;

struct Expr {
  explicit Expr(int l) : line(l) {}
  virtual ~Expr() = default;
  virtual Value Eval(Context& ctx) const = 0;
  int line;
};
using ExprPtr = std::unique_ptr<Expr>;

}  // namespace

class Node {
 public:
  explicit Node(int l) : line(l) {}
  virtual ~Node() = default;
  virtual void Render(Context& ctx, std::string* out) const = 0;
  int line;
};

namespace {

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

void RenderBody(const Body& body, Context& ctx, std::string* out) {
  for (const NodePtr& node : body) {
    node->Render(ctx, out);
    if (ctx.control != LoopControl::kNone) return;
    if (out->size() > kMaxOutputBytes)
      Fail(node->line, "output exceeds 64 MiB");
  }
}

// ----- expressions
struct Literal : Expr {
  Literal(int l, Value v) : Expr(l), value(std::move(v)) {}
  Value Eval(Context&) const override { return value; }
  Value value;
};

struct Name : Expr {
  Name(int l, std::string n) : Expr(l), name(std::move(n)) {}
  Value Eval(Context& ctx) const override { return ctx.Lookup(name); }
  std::string name;
};

struct ListExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override {
    List values;
    for (const ExprPtr& item : items) values.push_back(item->Eval(ctx));
    return tuple ? Value::FromTuple(std::move(values))
                 : Value::FromList(std::move(values));
  }
  std::vector<ExprPtr> items;
  bool tuple = false;
};

struct DictExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override {
    auto dict = std::make_shared<Dict>();
    for (const auto& [key, value] : items) {
      const Value k = key->Eval(ctx);
      if (!k.is_string()) Fail(line, "dict keys must be strings");
      dict->Set(k.as_string(), value->Eval(ctx));
    }
    return Value::FromDict(std::move(dict));
  }
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};

Value CallMethod(const Value& object, const std::string& name, int line);

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

struct GetAttr : Expr {
  GetAttr(int l, ExprPtr o, std::string n)
      : Expr(l), object(std::move(o)), name(std::move(n)) {}
  Value Eval(Context& ctx) const override {
    return GetAttribute(object->Eval(ctx), name, /*attribute_first=*/true,
                        line);
  }
  ExprPtr object;
  std::string name;
};

struct Subscript : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override {
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
      for (int64_t i : SliceIndices(static_cast<int64_t>(value.list()->size()),
                                    a, b, c, line)) {
        out.push_back((*value.list())[i]);
      }
      return Value::FromList(std::move(out));
    }
    if (value.is_undefined()) Fail(line, "cannot slice an undefined value");
    Fail(line, absl::StrCat("'", TypeName(value), "' object cannot be sliced"));
  }
  ExprPtr object, index, start, stop, step;
  bool is_slice = false;
};

using KwArgs = std::vector<std::pair<std::string, Value>>;

struct CallArgs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;

  void Eval(Context& ctx, std::vector<Value>* args, KwArgs* kwargs) const {
    for (const ExprPtr& arg : positional) args->push_back(arg->Eval(ctx));
    for (const auto& [name, arg] : keyword)
      kwargs->emplace_back(name, arg->Eval(ctx));
  }

  std::pair<std::vector<Value>, KwArgs> Evaluated(Context& ctx) const {
    std::pair<std::vector<Value>, KwArgs> out;
    Eval(ctx, &out.first, &out.second);
    return out;
  }
};

struct Call : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override {
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
  ExprPtr callee;
  CallArgs args;
};

Value ApplyFilter(const std::string& name, const Value& input,
                  const std::vector<Value>& args, const KwArgs& kwargs,
                  Context& ctx, int line);
bool ApplyTest(const std::string& name, const Value& input,
               const std::vector<Value>& args, Context& ctx, int line);

// `input | name(args)` and `input is name(args)`.
struct Application : Expr {
  using Expr::Expr;
  ExprPtr input;
  std::string name;
  CallArgs args;
};

struct Filter : Application {
  using Application::Application;
  Value Eval(Context& ctx) const override {
    const auto [values, kwargs] = args.Evaluated(ctx);
    return ApplyFilter(name, input->Eval(ctx), values, kwargs, ctx, line);
  }
};

struct Test : Application {
  using Application::Application;
  Value Eval(Context& ctx) const override {
    const std::vector<Value> values = args.Evaluated(ctx).first;
    return Value(ApplyTest(name, input->Eval(ctx), values, ctx, line) !=
                 negated);
  }
  bool negated = false;
};

struct Not : Expr {
  Not(int l, ExprPtr o) : Expr(l), operand(std::move(o)) {}
  Value Eval(Context& ctx) const override {
    return Value(!operand->Eval(ctx).Truthy());
  }
  ExprPtr operand;
};

struct Negate : Expr {
  Negate(int l, ExprPtr o, bool m) : Expr(l), operand(std::move(o)), minus(m) {}
  Value Eval(Context& ctx) const override {
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
  ExprPtr operand;
  bool minus;
};

struct Logical : Expr {
  Logical(int l, ExprPtr a, ExprPtr b, bool o)
      : Expr(l), left(std::move(a)), right(std::move(b)), is_or(o) {}
  Value Eval(Context& ctx) const override {
    Value a = left->Eval(ctx);
    if (is_or ? a.Truthy() : !a.Truthy()) return a;
    return right->Eval(ctx);
  }
  ExprPtr left, right;
  bool is_or;
};

struct Conditional : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override {
    if (condition->Eval(ctx).Truthy()) return then_value->Eval(ctx);
    return else_value ? else_value->Eval(ctx) : Value();
  }
  ExprPtr then_value, condition, else_value;
};

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

struct Binary : Expr {
  Binary(int l, std::string o, ExprPtr a, ExprPtr b)
      : Expr(l), op(std::move(o)), left(std::move(a)), right(std::move(b)) {}
  Value Eval(Context& ctx) const override {
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
  std::string op;
  ExprPtr left, right;
};

// a < b <= c ...: each comparison on adjacent operands, all must hold.
struct Comparison : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override {
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
        ok = op == "<"    ? c < 0
             : op == "<=" ? c <= 0
             : op == ">"  ? c > 0
                          : c >= 0;
      }
      if (!ok) return Value(false);
      left = right;
    }
    return Value(true);
  }
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> rest;
};

// ----- statements
struct TextNode : Node {
  TextNode(int l, std::string t) : Node(l), text(std::move(t)) {}
  void Render(Context&, std::string* out) const override { *out += text; }
  std::string text;
};

struct OutputNode : Node {
  OutputNode(int l, ExprPtr e) : Node(l), expr(std::move(e)) {}
  void Render(Context& ctx, std::string* out) const override {
    *out += expr->Eval(ctx).Str();
  }
  ExprPtr expr;
};

struct IfNode : Node {
  using Node::Node;
  void Render(Context& ctx, std::string* out) const override {
    for (const auto& [condition, body] : branches) {
      if (condition->Eval(ctx).Truthy()) {
        RenderBody(body, ctx, out);
        return;
      }
    }
    RenderBody(else_body, ctx, out);
  }
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body else_body;
};

struct ForNode : Node {
  using Node::Node;
  void Render(Context& ctx, std::string* out) const override {
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

  void Bind(Context& ctx, const Value& item) const {
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

  std::vector<std::string> targets;
  ExprPtr iterable;
  ExprPtr filter;
  Body body;
  Body else_body;
};

struct SetNode : Node {
  using Node::Node;
  void Render(Context& ctx, std::string*) const override {
    Value v = value->Eval(ctx);
    if (attribute.empty()) {
      ctx.Set(name, std::move(v));
      return;
    }
    const Value object = ctx.Lookup(name);
    if (object.kind() != Value::Kind::kDict || !object.dict()->is_namespace) {
      Fail(line,
           absl::StrCat("cannot assign attribute on non-namespace object '",
                        name, "'"));
    }
    object.dict()->Set(attribute, std::move(v));
  }
  std::string name;
  std::string attribute;  // non-empty: {% set name.attribute = ... %}
  ExprPtr value;
};

struct SetBlockNode : Node {
  using Node::Node;
  void Render(Context& ctx, std::string*) const override {
    std::string captured;
    RenderBody(body, ctx, &captured);
    ctx.Set(name, Value(captured));
  }
  std::string name;
  Body body;
};

struct ControlNode : Node {
  ControlNode(int l, LoopControl c) : Node(l), control(c) {}
  void Render(Context& ctx, std::string*) const override {
    ctx.control = control;
  }
  LoopControl control;
};

struct BlockNode
    : Node {  // {% generation %} ... {% endgeneration %}: just the body
  using Node::Node;
  void Render(Context& ctx, std::string* out) const override {
    RenderBody(body, ctx, out);
  }
  Body body;
};

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

// ------------------------------------------------------------------ builtins
const Value* Arg(const std::vector<Value>& args, const KwArgs& kwargs,
                 size_t index, const char* name) {
  if (index < args.size()) return &args[index];
  for (const auto& [key, value] : kwargs) {
    if (key == name) return &value;
  }
  return nullptr;
}

std::shared_ptr<Callable> MakeCallable(
    std::string name,
    std::function<Value(const std::vector<Value>&, const KwArgs&)> fn) {
  auto callable = std::make_shared<Callable>();
  callable->name = std::move(name);
  callable->call = std::move(fn);
  return callable;
}

std::vector<std::string> PySplit(const std::string& s, const Value* sep,
                                 int64_t max_split) {
  std::vector<std::string> parts;
  if (sep == nullptr || sep->is_none()) {
    const std::u32string text = U32(s);
    size_t i = 0;
    while (true) {
      while (i < text.size() && IsPySpace(text[i])) ++i;
      if (i >= text.size()) break;
      if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) {
        std::u32string rest = text.substr(i);
        while (!rest.empty() && IsPySpace(rest.back())) rest.pop_back();
        parts.push_back(U8(rest));
        break;
      }
      size_t j = i;
      while (j < text.size() && !IsPySpace(text[j])) ++j;
      parts.push_back(U8(text.substr(i, j - i)));
      i = j;
    }
    return parts;
  }
  const std::string delimiter = sep->Str();
  if (delimiter.empty()) Fail(0, "empty separator");
  size_t start = 0;
  while (true) {
    const size_t found = s.find(delimiter, start);
    if (found == std::string::npos ||
        (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split)) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, found - start));
    start = found + delimiter.size();
  }
}

Value StringList(const std::vector<std::string>& items) {
  List list;
  for (const std::string& item : items) list.emplace_back(item);
  return Value::FromList(std::move(list));
}

bool StartsOrEnds(const std::string& s, const Value& what, bool starts,
                  int line) {
  std::vector<std::string> options;
  if (what.is_string()) {
    options.push_back(what.as_string());
  } else if (what.kind() == Value::Kind::kList) {
    for (const Value& v : *what.list()) options.push_back(v.Str());
  } else {
    Fail(line, "startswith/endswith need a string or a tuple of strings");
  }
  for (const std::string& option : options) {
    if (starts ? absl::StartsWith(s, option) : absl::EndsWith(s, option))
      return true;
  }
  return false;
}

std::string Title(const std::string& s, bool capitalize_only) {
  std::u32string text = U32(s);
  bool previous_cased = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    const bool upper = capitalize_only ? i == 0 : !previous_cased;
    text[i] = static_cast<char32_t>(
        upper ? utf8proc_toupper(static_cast<utf8proc_int32_t>(c))
              : utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
    previous_cased = IsCased(c);
  }
  return U8(text);
}

Value CallMethod(const Value& object, const std::string& name, int line) {
  const Value self = object;
  auto method =
      [&](std::function<Value(const std::vector<Value>&, const KwArgs&)> fn) {
        return Value::FromCallable(MakeCallable(name, std::move(fn)));
      };
  if (object.is_string()) {
    const std::string s = object.as_string();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      return method([s, name](const std::vector<Value>& a, const KwArgs& k) {
        const Value* chars = Arg(a, k, 0, "chars");
        return Value(Strip(s, chars, name != "rstrip", name != "lstrip"));
      });
    }
    if (name == "split" || name == "rsplit") {
      return method([s, name](const std::vector<Value>& a, const KwArgs& k) {
        const Value* sep = Arg(a, k, 0, "sep");
        const Value* max = Arg(a, k, 1, "maxsplit");
        if (name == "rsplit" && max != nullptr && max->as_int() >= 0) {
          Fail(0, "rsplit with maxsplit is not supported");
        }
        return StringList(PySplit(s, sep, max == nullptr ? -1 : max->as_int()));
      });
    }
    if (name == "splitlines") {
      return method([s](const std::vector<Value>&, const KwArgs&) {
        std::vector<std::string> lines = PySplit(s, nullptr, -1);
        lines.clear();
        size_t start = 0;
        for (size_t i = 0; i <= s.size(); ++i) {
          if (i == s.size() || s[i] == '\n') {
            if (i > start || i < s.size())
              lines.push_back(s.substr(start, i - start));
            start = i + 1;
          }
        }
        if (!lines.empty() && lines.back().empty() && !s.empty() &&
            s.back() == '\n')
          lines.pop_back();
        return StringList(lines);
      });
    }
    if (name == "startswith" || name == "endswith") {
      return method(
          [s, name, line](const std::vector<Value>& a, const KwArgs&) {
            if (a.empty()) Fail(line, name + " needs an argument");
            return Value(StartsOrEnds(s, a[0], name == "startswith", line));
          });
    }
    if (name == "upper" || name == "lower") {
      return method([s, name](const std::vector<Value>&, const KwArgs&) {
        return Value(MapCase(s, name == "upper"));
      });
    }
    if (name == "title" || name == "capitalize") {
      return method([s, name](const std::vector<Value>&, const KwArgs&) {
        return Value(Title(s, name == "capitalize"));
      });
    }
    if (name == "replace") {
      return method([s, line](const std::vector<Value>& a, const KwArgs&) {
        if (a.size() < 2) Fail(line, "replace needs two arguments");
        const std::string from = a[0].Str(), to = a[1].Str();
        int64_t count = a.size() > 2 ? a[2].as_int() : -1;
        if (from.empty())
          Fail(line, "replace of an empty string is not supported");
        std::string out;
        size_t start = 0;
        while (count != 0) {
          const size_t found = s.find(from, start);
          if (found == std::string::npos) break;
          out += s.substr(start, found - start) + to;
          start = found + from.size();
          --count;
        }
        return Value(out + s.substr(start));
      });
    }
    if (name == "find" || name == "count") {
      return method([s, name, line](const std::vector<Value>& a,
                                    const KwArgs&) {
        if (a.empty() || !a[0].is_string())
          Fail(line, name + " needs a string");
        const std::string& needle = a[0].as_string();
        if (name == "find") {
          const size_t at = s.find(needle);
          return Value(at == std::string::npos
                           ? int64_t{-1}
                           : static_cast<int64_t>(U32(s.substr(0, at)).size()));
        }
        int64_t n = 0;
        if (needle.empty())
          return Value(static_cast<int64_t>(U32(s).size() + 1));
        for (size_t at = s.find(needle); at != std::string::npos;
             at = s.find(needle, at + needle.size()))
          ++n;
        return Value(n);
      });
    }
    if (name == "join") {
      return method([s, line](const std::vector<Value>& a, const KwArgs&) {
        if (a.empty()) Fail(line, "join needs an iterable");
        std::string out;
        bool first = true;
        for (const Value& item : Iterate(a[0], line)) {
          if (!first) out += s;
          first = false;
          if (!item.is_string()) Fail(line, "join expects strings");
          out += item.as_string();
        }
        return Value(out);
      });
    }
    if (name == "isdigit" || name == "isalpha" || name == "isspace" ||
        name == "isalnum") {
      return method([s, name](const std::vector<Value>&, const KwArgs&) {
        const std::u32string text = U32(s);
        if (text.empty()) return Value(false);
        for (char32_t c : text) {
          const auto category =
              utf8proc_category(static_cast<utf8proc_int32_t>(c));
          const bool digit = category == UTF8PROC_CATEGORY_ND;
          const bool alpha = category >= UTF8PROC_CATEGORY_LU &&
                             category <= UTF8PROC_CATEGORY_LO;
          const bool ok = name == "isdigit"   ? digit
                          : name == "isalpha" ? alpha
                          : name == "isspace" ? IsPySpace(c)
                                              : (digit || alpha);
          if (!ok) return Value(false);
        }
        return Value(true);
      });
    }
    Fail(line, absl::StrCat("unsupported string method '", name, "'"));
  }
  if (object.kind() == Value::Kind::kDict) {
    const auto dict = object.dict();
    if (name == "items" || name == "keys" || name == "values") {
      return method([dict, name](const std::vector<Value>&, const KwArgs&) {
        List out;
        for (const std::string& key : dict->keys) {
          if (name == "keys") {
            out.emplace_back(key);
          } else if (name == "values") {
            out.push_back(*dict->Find(key));
          } else {
            out.push_back(Value::FromTuple({Value(key), *dict->Find(key)}));
          }
        }
        return Value::FromList(std::move(out));
      });
    }
    if (name == "get") {
      return method([dict](const std::vector<Value>& a, const KwArgs& k) {
        const Value* key = Arg(a, k, 0, "key");
        const Value* fallback = Arg(a, k, 1, "default");
        if (key != nullptr && key->is_string()) {
          const Value* found = dict->Find(key->as_string());
          if (found != nullptr) return *found;
        }
        return fallback != nullptr ? *fallback : Value::None();
      });
    }
  }
  if (object.kind() == Value::Kind::kList) {
    const auto list = object.list();
    if (name == "index" || name == "count") {
      return method(
          [list, name, line](const std::vector<Value>& a, const KwArgs&) {
            if (a.empty()) Fail(line, name + " needs an argument");
            int64_t count = 0;
            for (size_t i = 0; i < list->size(); ++i) {
              if (Equal((*list)[i], a[0])) {
                if (name == "index") return Value(static_cast<int64_t>(i));
                ++count;
              }
            }
            if (name == "index") Fail(line, "value is not in list");
            return Value(count);
          });
    }
    Fail(line, absl::StrCat("unsupported list method '", name,
                            "' (templates cannot modify values)"));
  }
  Fail(line, absl::StrCat("'", TypeName(object), "' object has no attribute '",
                          name, "'"));
}

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

Value ApplyFilter(const std::string& name, const Value& input,
                  const std::vector<Value>& args, const KwArgs& kwargs,
                  Context& ctx, int line) {
  auto arg = [&](size_t i, const char* key) {
    return Arg(args, kwargs, i, key);
  };
  if (name == "tojson") {
    const Value* indent = arg(0, "indent");
    const Value* sort = arg(3, "sort_keys");
    if (arg(1, "ensure_ascii") != nullptr && arg(1, "ensure_ascii")->Truthy()) {
      Fail(line, "tojson(ensure_ascii=True) is not supported");
    }
    if (arg(2, "separators") != nullptr && !arg(2, "separators")->is_none()) {
      Fail(line, "tojson(separators=...) is not supported");
    }
    const int width = indent == nullptr || indent->is_none()
                          ? -1
                          : static_cast<int>(indent->as_int());
    return Value(ToJson(input, width, sort != nullptr && sort->Truthy()));
  }
  if (name == "trim")
    return Value(Strip(input.Str(), arg(0, "chars"), true, true));
  if (name == "length" || name == "count") return Value(Length(input, line));
  if (name == "string") return Value(input.Str());
  if (name == "lower" || name == "upper")
    return Value(MapCase(input.Str(), name == "upper"));
  if (name == "title" || name == "capitalize")
    return Value(Title(input.Str(), name == "capitalize"));
  if (name == "safe") return input;
  if (name == "e" || name == "escape") return Value(HtmlEscape(input.Str()));
  if (name == "default" || name == "d") {
    const Value* fallback = arg(0, "default_value");
    const Value* boolean = arg(1, "boolean");
    const bool use_fallback =
        input.is_undefined() ||
        (boolean != nullptr && boolean->Truthy() && !input.Truthy());
    return use_fallback ? (fallback != nullptr ? *fallback : Value("")) : input;
  }
  if (name == "first" || name == "last") {
    const List items = Iterate(input, line);
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    const Value* separator = arg(0, "d");
    const Value* attribute = arg(1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : Iterate(input, line)) {
      if (!first) out += separator != nullptr ? separator->Str() : "";
      first = false;
      out += (attribute != nullptr ? AttributeOf(item, attribute->Str(), line)
                                   : item)
                 .Str();
    }
    return Value(out);
  }
  if (name == "list") return Value::FromList(Iterate(input, line));
  if (name == "reverse") {
    if (input.is_string()) {
      std::u32string text = U32(input.as_string());
      std::reverse(text.begin(), text.end());
      return Value(U8(text));
    }
    List items = Iterate(input, line);
    std::reverse(items.begin(), items.end());
    return Value::FromList(std::move(items));
  }
  if (name == "items") {
    if (input.is_undefined()) return Value::FromList({});
    if (input.kind() != Value::Kind::kDict)
      Fail(line, "items filter needs a mapping");
    return CallMethod(input, "items", line).callable()->call({}, {});
  }
  if (name == "int" || name == "float") {
    const Value* fallback = arg(0, "default");
    if (input.is_number() || input.kind() == Value::Kind::kBool) {
      const double v = input.kind() == Value::Kind::kBool ? input.as_bool()
                                                          : input.as_float();
      return name == "int"
                 ? Value(static_cast<int64_t>(input.kind() == Value::Kind::kInt
                                                  ? input.as_int()
                                                  : static_cast<int64_t>(v)))
                 : Value(v);
    }
    if (input.is_string()) {
      const std::string text = Strip(input.as_string(), nullptr, true, true);
      int64_t i = 0;
      double f = 0;
      if (name == "int" && absl::SimpleAtoi(text, &i)) return Value(i);
      if (absl::SimpleAtod(text, &f))
        return name == "int" ? Value(static_cast<int64_t>(f)) : Value(f);
    }
    if (fallback != nullptr) return *fallback;
    return name == "int" ? Value(static_cast<int64_t>(0)) : Value(0.0);
  }
  if (name == "abs") {
    if (input.kind() == Value::Kind::kInt)
      return Value(std::abs(input.as_int()));
    if (input.kind() == Value::Kind::kFloat)
      return Value(std::fabs(input.as_float()));
    Fail(line, "abs needs a number");
  }
  if (name == "round") {
    const Value* precision = arg(0, "precision");
    const double scale =
        std::pow(10.0, precision != nullptr ? precision->as_int() : 0);
    return Value(std::round(input.as_float() * scale) / scale);
  }
  if (name == "replace") {
    if (args.size() < 2) Fail(line, "replace needs two arguments");
    return CallMethod(Value(input.Str()), "replace", line)
        .callable()
        ->call(args, {});
  }
  if (name == "unique") {
    List out;
    for (const Value& item : Iterate(input, line)) {
      bool seen = false;
      for (const Value& kept : out) seen = seen || Equal(kept, item);
      if (!seen) out.push_back(item);
    }
    return Value::FromList(std::move(out));
  }
  if (name == "sum") {
    Value total(static_cast<int64_t>(0));
    for (const Value& item : Iterate(input, line))
      total = Arithmetic("+", total, item, line);
    return total;
  }
  if (name == "min" || name == "max" || name == "sort") {
    List items = Iterate(input, line);
    const Value* attribute = arg(name == "sort" ? 2 : 1, "attribute");
    const Value* reverse = name == "sort" ? arg(0, "reverse") : nullptr;
    auto key = [&](const Value& v) {
      return attribute != nullptr ? AttributeOf(v, attribute->Str(), line) : v;
    };
    std::stable_sort(items.begin(), items.end(),
                     [&](const Value& a, const Value& b) {
                       return Compare(key(a), key(b), line) < 0;
                     });
    if (reverse != nullptr && reverse->Truthy())
      std::reverse(items.begin(), items.end());
    if (name == "sort") return Value::FromList(std::move(items));
    if (items.empty()) return Value();
    return name == "min" ? items.front() : items.back();
  }
  if (name == "map") {
    const Value* attribute = arg(1000, "attribute");
    List out;
    for (const Value& item : Iterate(input, line)) {
      if (attribute != nullptr) {
        const Value got = AttributeOf(item, attribute->Str(), line);
        const Value* fallback = arg(1000, "default");
        out.push_back(got.is_undefined() && fallback != nullptr ? *fallback
                                                                : got);
      } else {
        if (args.empty()) Fail(line, "map needs a filter name or attribute=");
        std::vector<Value> rest(args.begin() + 1, args.end());
        out.push_back(ApplyFilter(args[0].Str(), item, rest, {}, ctx, line));
      }
    }
    return Value::FromList(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" ||
      name == "rejectattr") {
    const bool by_attribute = name == "selectattr" || name == "rejectattr";
    const bool keep_when = name == "select" || name == "selectattr";
    List out;
    for (const Value& item : Iterate(input, line)) {
      size_t next = 0;
      Value subject = item;
      if (by_attribute) {
        if (args.empty()) Fail(line, name + " needs an attribute name");
        subject = AttributeOf(item, args[0].Str(), line);
        next = 1;
      }
      bool result;
      if (next < args.size()) {
        std::vector<Value> test_args(args.begin() + next + 1, args.end());
        result = ApplyTest(args[next].Str(), subject, test_args, ctx, line);
      } else {
        result = subject.Truthy();
      }
      if (result == keep_when) out.push_back(item);
    }
    return Value::FromList(std::move(out));
  }
  if (name == "indent") {
    const Value* width = arg(0, "width");
    const Value* first = arg(1, "first");
    const Value* blank = arg(2, "blank");
    const std::string pad(
        width != nullptr ? static_cast<size_t>(width->as_int()) : 4, ' ');
    const std::string text = input.Str();
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
  Fail(line, absl::StrCat("unsupported filter '", name, "'"));
}

bool ApplyTest(const std::string& name, const Value& input,
               const std::vector<Value>& args, Context& ctx, int line) {
  using K = Value::Kind;
  auto need_arg = [&] {
    if (args.empty())
      Fail(line, absl::StrCat("test '", name, "' needs an argument"));
    return args[0];
  };
  if (name == "defined") return !input.is_undefined();
  if (name == "undefined") return input.is_undefined();
  if (name == "none") return input.is_none();
  if (name == "boolean") return input.kind() == K::kBool;
  if (name == "true") return input.kind() == K::kBool && input.as_bool();
  if (name == "false") return input.kind() == K::kBool && !input.as_bool();
  if (name == "integer") return input.kind() == K::kInt;
  if (name == "float") return input.kind() == K::kFloat;
  if (name == "number") return input.is_number() || input.kind() == K::kBool;
  if (name == "string") return input.is_string();
  if (name == "mapping") return input.kind() == K::kDict;
  if (name == "iterable")
    return input.kind() == K::kList || input.kind() == K::kDict ||
           input.is_string() || input.is_undefined();
  if (name == "sequence")
    return input.kind() == K::kList || input.kind() == K::kDict ||
           input.is_string();
  if (name == "callable") return input.kind() == K::kCallable;
  if (name == "even" || name == "odd") {
    if (input.kind() != K::kInt) Fail(line, "even/odd need an integer");
    return (input.as_int() % 2 == 0) == (name == "even");
  }
  if (name == "divisibleby") {
    const Value n = need_arg();
    if (n.as_int() == 0) Fail(line, "division by zero");
    return input.as_int() % n.as_int() == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==")
    return Equal(input, need_arg());
  if (name == "ne" || name == "!=") return !Equal(input, need_arg());
  if (name == "lt" || name == "lessthan" || name == "<")
    return Compare(input, need_arg(), line) < 0;
  if (name == "le" || name == "<=")
    return Compare(input, need_arg(), line) <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">")
    return Compare(input, need_arg(), line) > 0;
  if (name == "ge" || name == ">=")
    return Compare(input, need_arg(), line) >= 0;
  if (name == "in") return Contains(need_arg(), input, line);
  if (name == "sameas") {
    const Value other = need_arg();
    if (input.kind() != other.kind()) return false;
    if (input.kind() == K::kList) return input.list() == other.list();
    if (input.kind() == K::kDict) return input.dict() == other.dict();
    return Equal(input, other);
  }
  if (name == "lower" || name == "upper") {
    return input.is_string() &&
           MapCase(input.as_string(), name == "upper") == input.as_string();
  }
  (void)ctx;
  Fail(line, absl::StrCat("unsupported test '", name, "'"));
}

}  // namespace

// ------------------------------------------------------------------ Template
Template::~Template() = default;

absl::StatusOr<std::shared_ptr<const Template>> Template::Parse(
    absl::string_view source, absl::string_view name) {
  std::shared_ptr<Template> t(new Template);
  t->name_ = std::string(name);
  try {
    Lexer lexer(NormalizeNewlines(source));
    Parser parser(lexer.Run());
    t->body_ = parser.ParseTemplate();
  } catch (const Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": template line ", e.line, ": ", e.message));
  }
  return std::shared_ptr<const Template>(std::move(t));
}

absl::StatusOr<std::string> Template::Render(const Value& variables) const {
  Context ctx;
  ctx.scopes.emplace_back();
  auto& globals = ctx.scopes.back();
  globals["raise_exception"] = Value::FromCallable(MakeCallable(
      "raise_exception",
      [](const std::vector<Value>& args, const KwArgs&) -> Value {
        throw Raised{args.empty() ? "raise_exception" : args[0].Str()};
      }));
  globals["strftime_now"] = Value::FromCallable(MakeCallable(
      "strftime_now", [](const std::vector<Value>& args, const KwArgs&) {
        if (args.empty()) Fail(0, "strftime_now needs a format");
        const std::time_t now = std::time(nullptr);
        std::tm local;
        localtime_r(&now, &local);
        char buffer[256];
        const size_t n = std::strftime(buffer, sizeof(buffer),
                                       args[0].Str().c_str(), &local);
        return Value(std::string(buffer, n));
      }));
  // namespace(...) and dict(...): a mapping from positional mappings and
  // keywords.
  auto mapping = [](bool is_namespace) {
    return
        [is_namespace](const std::vector<Value>& args, const KwArgs& kwargs) {
          auto dict = std::make_shared<Dict>();
          dict->is_namespace = is_namespace;
          for (const Value& arg : args) {
            if (arg.kind() != Value::Kind::kDict) {
              Fail(0, is_namespace ? "namespace() takes a mapping or keywords"
                                   : "dict() takes a mapping or keywords");
            }
            for (const std::string& key : arg.dict()->keys)
              dict->Set(key, *arg.dict()->Find(key));
          }
          for (const auto& [key, value] : kwargs) dict->Set(key, value);
          return Value::FromDict(dict);
        };
  };
  globals["namespace"] =
      Value::FromCallable(MakeCallable("namespace", mapping(true)));
  globals["dict"] = Value::FromCallable(MakeCallable("dict", mapping(false)));
  globals["range"] = Value::FromCallable(
      MakeCallable("range", [](const std::vector<Value>& args, const KwArgs&) {
        if (args.empty() || args.size() > 3)
          Fail(0, "range takes 1 to 3 integers");
        const int64_t start = args.size() > 1 ? args[0].as_int() : 0;
        const int64_t stop =
            args.size() > 1 ? args[1].as_int() : args[0].as_int();
        const int64_t step = args.size() > 2 ? args[2].as_int() : 1;
        if (step == 0) Fail(0, "range step cannot be zero");
        List out;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
          if (out.size() > 1'000'000) Fail(0, "range too large");
          out.emplace_back(i);
        }
        return Value::FromList(std::move(out));
      }));
  if (variables.kind() == Value::Kind::kDict) {
    for (const std::string& key : variables.dict()->keys) {
      globals[key] = *variables.dict()->Find(key);
    }
  }
  ctx.scopes.emplace_back();  // the template's own top-level variables
  std::string out;
  try {
    RenderBody(body_, ctx, &out);
  } catch (const Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": template line ", e.line, ": ", e.message));
  } catch (const Raised& r) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": ", r.message));
  }
  return out;
}

}  // namespace microrl::tokenizer::jinja
