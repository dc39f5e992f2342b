#ifndef MICRORL_COMMON_TOKENIZER_JINJA_VALUES_H_
#define MICRORL_COMMON_TOKENIZER_JINJA_VALUES_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/tokenizer/jinja.h"

// Operations on template values with Python's semantics.
namespace microrl::tokenizer::jinja {

// Keyword arguments of a call, in the order written.
using KwArgs = std::vector<std::pair<std::string, Value>>;

// Python ==.
bool Equal(const Value& a, const Value& b);
// Python's type name ("str", "int", "dict", ...), for messages.
const char* TypeName(const Value& v);
// Python's ordering: < 0, 0 or > 0; a TypeError (Fail) across types.
int Compare(const Value& a, const Value& b, int line);
// The items of a list, the keys of a dict, the characters of a string.
List Iterate(const Value& v, int line);
// Python `item in container`.
bool Contains(const Value& container, const Value& item, int line);
// Python slicing semantics for a sequence of n elements.
std::vector<int64_t> SliceIndices(int64_t n, const Value& start,
                                  const Value& stop, const Value& step_value,
                                  int line);

// obj.name or obj['name'] (attribute_first decides which Jinja tries first).
Value GetAttribute(const Value& object, const std::string& name,
                   bool attribute_first, int line);
// obj[key].
Value GetItem(const Value& object, const Value& key, int line);
// a op b for + - * / // % **.
Value Arithmetic(const std::string& op, const Value& a, const Value& b,
                 int line);

}  // namespace microrl::tokenizer::jinja

#endif  // MICRORL_COMMON_TOKENIZER_JINJA_VALUES_H_
