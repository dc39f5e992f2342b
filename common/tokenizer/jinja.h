#ifndef MICRORL_COMMON_TOKENIZER_JINJA_H_
#define MICRORL_COMMON_TOKENIZER_JINJA_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

// The subset of Jinja2 that Hugging Face chat templates use, rendered as
// transformers renders them: trim_blocks and lstrip_blocks on, a single
// trailing newline of the template dropped, Jinja2's default Undefined, the
// loopcontrols extension ({% break %}, {% continue %}), and transformers'
// globals (raise_exception, strftime_now, namespace) and tojson filter
// (Python's json.dumps with ensure_ascii=False).
//
// Supported: {{ }}, {% %} and {# #} with '-' and '+' whitespace control; if /
// elif / else, for (with loop.*, tuple targets, an `if` filter and `else`), set
// (names and namespace attributes), generation blocks; literals, lists, dicts,
// tuples, attribute and item access, slicing, calls with keyword arguments,
// filters, tests, arithmetic, comparison chains, `in`, boolean operators and
// conditional expressions; Python's str, list and dict methods that templates
// use. Anything else (macros, includes, unknown filters, tests or methods) is a
// clear error naming the template line, never silently different output.
namespace microrl::tokenizer::jinja {

class Value;
using List = std::vector<Value>;
struct Dict;
struct Callable;

// A template value: Python-like semantics (truthiness, equality, str()).
class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kCallable
  };

  Value() = default;  // undefined
  static Value None();
  Value(bool b);
  Value(int64_t i);
  Value(int i) : Value(static_cast<int64_t>(i)) {}
  Value(double f);
  Value(std::string s);
  Value(const char* s) : Value(std::string(s)) {}
  static Value FromList(List items);
  // A list that prints as a Python tuple: "(1, 2)".
  static Value FromTuple(List items);
  static Value FromDict(std::shared_ptr<Dict> dict);
  static Value FromCallable(std::shared_ptr<Callable> callable);
  // JSON -> value (objects keep their key order).
  static Value FromJson(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_tuple() const { return tuple_; }
  bool is_number() const {
    return kind_ == Kind::kInt || kind_ == Kind::kFloat;
  }
  bool as_bool() const { return b_; }
  int64_t as_int() const { return i_; }
  double as_float() const {
    return kind_ == Kind::kInt ? static_cast<double>(i_) : f_;
  }
  const std::string& as_string() const { return s_; }
  const std::shared_ptr<List>& list() const { return list_; }
  const std::shared_ptr<Dict>& dict() const { return dict_; }
  const std::shared_ptr<Callable>& callable() const { return callable_; }

  // Python truthiness (undefined is false).
  bool Truthy() const;
  // Python str(): what {{ value }} prints ("" for undefined).
  std::string Str() const;
  // Python repr() (strings quoted), used inside containers.
  std::string Repr() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool tuple_ = false;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Callable> callable_;
};

// An insertion-ordered mapping. `is_namespace` marks Jinja namespace() objects,
// the only ones whose attributes {% set %} may assign.
struct Dict {
  std::vector<std::string> keys;
  std::unordered_map<std::string, Value> values;
  bool is_namespace = false;

  const Value* Find(const std::string& key) const;
  void Set(const std::string& key, Value value);
};

// A built-in function or bound method.
struct Callable {
  std::string name;
  std::function<Value(const std::vector<Value>& args,
                      const std::vector<std::pair<std::string, Value>>& kwargs)>
      call;
};

// Python json.dumps of a value: ensure_ascii=False, `indent` < 0 for none,
// separators (", ", ": ") or (",", ": ") with an indent, as Python chooses.
std::string ToJson(const Value& value, int indent = -1, bool sort_keys = false);

class Node;

// A parsed template. Immutable and thread-safe to render concurrently.
class Template {
 public:
  // Parses `source`; errors name `name` and the line.
  static absl::StatusOr<std::shared_ptr<const Template>> Parse(
      absl::string_view source, absl::string_view name);
  ~Template();

  // Renders with `variables` (a dict value) as the template's globals, plus
  // raise_exception, strftime_now and namespace. InvalidArgument for an error
  // in the template's logic (naming the line) or a raise_exception (its
  // message).
  absl::StatusOr<std::string> Render(const Value& variables) const;

 private:
  Template() = default;
  std::string name_;
  std::vector<std::unique_ptr<Node>> body_;
};

}  // namespace microrl::tokenizer::jinja

#endif  // MICRORL_COMMON_TOKENIZER_JINJA_H_
