#include "common/tokenizer/jinja/text.h"

#include <utf8proc.h>

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja/errors.h"
#include "common/tokenizer/unicode.h"

namespace microrl::tokenizer::jinja {

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
    char exp[16];  // "e-324" at most; room for any int
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

}  // namespace microrl::tokenizer::jinja
