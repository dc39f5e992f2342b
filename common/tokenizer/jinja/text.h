#ifndef MICRORL_COMMON_TOKENIZER_JINJA_TEXT_H_
#define MICRORL_COMMON_TOKENIZER_JINJA_TEXT_H_

#include <string>

#include "common/tokenizer/jinja.h"

// Python's text semantics, for the Jinja renderer.
namespace microrl::tokenizer::jinja {

// Python's whitespace (str.isspace()).
bool IsPySpace(char32_t c);

// UTF-8 <-> code points (invalid bytes as U+FFFD).
std::u32string U32(const std::string& s);
std::string U8(const std::u32string& s);

// Python str.strip/lstrip/rstrip with an optional set of characters (`chars`
// null or None: whitespace).
std::string Strip(const std::string& s, const Value* chars, bool left,
                  bool right);

// Python's str.upper()/lower(): simple case mapping plus the full
// (multi-character) mappings of SpecialCasing.txt that are not
// language-specific.
std::string MapCase(const std::string& s, bool upper);

// Python's str.title() (or str.capitalize() with `capitalize_only`).
std::string Title(const std::string& s, bool capitalize_only);

// Whether `c` has another case.
bool IsCased(char32_t c);

// Python's shortest round-trip float repr.
std::string PyFloat(double v);

// Python's repr() of a string.
std::string PyRepr(const std::string& s);

// `s` as a JSON string (ensure_ascii=False) appended to *out.
void JsonString(const std::string& s, std::string* out);

}  // namespace microrl::tokenizer::jinja

#endif  // MICRORL_COMMON_TOKENIZER_JINJA_TEXT_H_
