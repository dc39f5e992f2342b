#include "reward_service/math/normalize.h"

#include <cctype>
#include <set>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "reward_service/extraction.h"
#include "reward_service/math_answer.h"

namespace microrl::reward {
namespace math {

std::optional<std::string> Group(const std::string& s, size_t open,
                                 size_t* end) {
  if (open >= s.size() || s[open] != '{') return std::nullopt;
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      ++i;
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) {
      *end = i + 1;
      return s.substr(open + 1, i - open - 1);
    }
  }
  return std::nullopt;
}

}  // namespace math

namespace {

using math::Group;

std::string ReplaceAll(std::string s, absl::string_view from,
                       absl::string_view to) {
  return absl::StrReplaceAll(s, {{from, to}});
}

const std::set<std::string>& UnitWords() {
  static const auto* units = new std::set<std::string>{"cm",
                                                       "mm",
                                                       "m",
                                                       "km",
                                                       "in",
                                                       "inch",
                                                       "inches",
                                                       "ft",
                                                       "foot",
                                                       "feet",
                                                       "yd",
                                                       "yard",
                                                       "yards",
                                                       "mi",
                                                       "mile",
                                                       "miles",
                                                       "meter",
                                                       "meters",
                                                       "metre",
                                                       "metres",
                                                       "centimeter",
                                                       "centimeters",
                                                       "kilometer",
                                                       "kilometers",
                                                       "millimeter",
                                                       "millimeters",
                                                       "unit",
                                                       "units",
                                                       "square",
                                                       "sq",
                                                       "cubic",
                                                       "degree",
                                                       "degrees",
                                                       "deg",
                                                       "radian",
                                                       "radians",
                                                       "dollar",
                                                       "dollars",
                                                       "cent",
                                                       "cents",
                                                       "hour",
                                                       "hours",
                                                       "hr",
                                                       "hrs",
                                                       "minute",
                                                       "minutes",
                                                       "min",
                                                       "second",
                                                       "seconds",
                                                       "sec",
                                                       "s",
                                                       "day",
                                                       "days",
                                                       "week",
                                                       "weeks",
                                                       "month",
                                                       "months",
                                                       "year",
                                                       "years",
                                                       "mph",
                                                       "kg",
                                                       "g",
                                                       "gram",
                                                       "grams",
                                                       "kilogram",
                                                       "kilograms",
                                                       "pound",
                                                       "pounds",
                                                       "lb",
                                                       "lbs",
                                                       "ounce",
                                                       "ounces",
                                                       "oz",
                                                       "liter",
                                                       "liters",
                                                       "litre",
                                                       "ml",
                                                       "l",
                                                       "gallon",
                                                       "gallons",
                                                       "mile per hour",
                                                       "miles per hour",
                                                       "per",
                                                       "and",
                                                       "of",
                                                       "mathrm",
                                                       "p.m.",
                                                       "a.m.",
                                                       "pm",
                                                       "am",
                                                       "percent",
                                                       "points",
                                                       "point"};
  return *units;
}

bool IsUnitText(absl::string_view text) {
  std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  t = ReplaceAll(t, "^2", "");
  t = ReplaceAll(t, "^3", "");
  t = ReplaceAll(t, "^{2}", "");
  t = ReplaceAll(t, "^{3}", "");
  t = ReplaceAll(t, "\\", "");
  if (t.empty()) return true;
  size_t start = 0;
  while (start < t.size()) {
    while (start < t.size() &&
           (t[start] == ' ' || t[start] == '/' || t[start] == '.'))
      ++start;
    size_t end = start;
    while (end < t.size() && t[end] != ' ' && t[end] != '/') ++end;
    if (end > start && UnitWords().count(t.substr(start, end - start)) == 0 &&
        UnitWords().count(ReplaceAll(t.substr(start, end - start), ".", "")) ==
            0) {
      return false;
    }
    start = end;
  }
  return true;
}

// Whether `name` (without the backslash) is a macro that only styles text or
// letters: \text, \textbf, \textnormal, \mathrm, \mathbf, \mbox, \bm, ...
bool IsTextMacro(absl::string_view name) {
  static const auto* exact = new std::set<std::string, std::less<>>{
      "mbox", "hbox", "boldsymbol", "bm", "textnormal", "operatorname*"};
  if (exact->count(name) != 0) return true;
  if (absl::StartsWith(name, "text")) return name != "textstyle";
  // \mathbb and \mathcal name sets (\mathbb{R}): parsed, not unwrapped.
  return absl::StartsWith(name, "math") && name != "mathbb" &&
         name != "mathcal" && name != "mathfrak";
}

// Text macros (\text{..}, \mathrm{..}, \textnormal{..}, ...): drop unit words
// (and a following ^2/^3), keep the rest of the text as plain characters.
std::string UnwrapTextCommands(std::string s) {
  size_t from = 0;
  for (int guard = 0; guard < 200; ++guard) {
    // The next "\name{" with a text macro name.
    size_t best = std::string::npos, name_end = 0;
    for (size_t at = s.find('\\', from); at != std::string::npos;
         at = s.find('\\', at + 1)) {
      size_t end = at + 1;
      while (end < s.size() && std::isalpha(static_cast<unsigned char>(s[end])))
        ++end;
      if (end < s.size() && s[end] == '*') ++end;
      if (end < s.size() && s[end] == '{' &&
          IsTextMacro(absl::string_view(s).substr(at + 1, end - at - 1))) {
        best = at;
        name_end = end;
        break;
      }
    }
    if (best == std::string::npos) break;
    size_t end = 0;
    std::optional<std::string> content = Group(s, name_end, &end);
    if (!content) break;
    std::string replacement = *content;
    // "\text{ and }", "\text{or}": separators of a list, kept as words.
    const std::string word =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(*content));
    if (word == "and" || word == "or") {
      s = s.substr(0, best) + " " + word + " " + s.substr(end);
      from = best;
      continue;
    }
    const bool has_digits = std::any_of(
        content->begin(), content->end(),
        [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    const bool whole = best == 0 && end == s.size();
    // Words after a number at the end of an answer are its unit, whatever
    // they are: 21\text{ dogs}, 5\textnormal{ apples}.
    size_t before = best;
    while (before > 0 && s[before - 1] == ' ') --before;
    size_t after = end;
    for (const char* power : {"^{2}", "^{3}", "^2", "^3"}) {
      if (s.compare(after, std::string(power).size(), power) == 0) {
        after += std::string(power).size();
        break;
      }
    }
    const bool trailing_unit =
        before > 0 &&
        (std::isdigit(static_cast<unsigned char>(s[before - 1])) ||
         s[before - 1] == '}' || s[before - 1] == ')') &&
        absl::StripAsciiWhitespace(absl::string_view(s).substr(after)).empty();
    if (!whole && !has_digits && (trailing_unit || IsUnitText(*content))) {
      replacement = "";
      for (const char* power : {"^{2}", "^{3}", "^2", "^3"}) {
        if (s.compare(end, std::string(power).size(), power) == 0) {
          end += std::string(power).size();
          break;
        }
      }
    }
    s = s.substr(0, best) + replacement + s.substr(end);
    from = best;
  }
  return s;
}

// "28 percent", "28 pct", "28 percentage" -> "28%".
std::string PercentWords(std::string s) {
  const std::string lower = absl::AsciiStrToLower(s);
  for (const char* word : {"percentage", "percent", "pct"}) {
    const size_t length = std::string(word).size();
    for (size_t at = lower.rfind(word); at != std::string::npos;
         at = at == 0 ? std::string::npos : lower.rfind(word, at - 1)) {
      const size_t end = at + length;
      if (end < s.size() && std::isalpha(static_cast<unsigned char>(s[end])))
        continue;
      size_t start = at;
      while (start > 0 && s[start - 1] == ' ') --start;
      if (start == 0 ||
          !(std::isdigit(static_cast<unsigned char>(s[start - 1])) ||
            s[start - 1] == '}' || s[start - 1] == ')'))
        continue;
      return PercentWords(s.substr(0, start) + "%" + s.substr(end));
    }
  }
  return s;
}

// Where the digit groups at the start of `s` end: an optional '-', 1 to 3
// digits (not starting with 0 unless `leading_zero`), then one or more groups
// of three digits each after `separator`; npos when `s` does not start so.
size_t DigitGroupsEnd(const std::string& s, char separator, bool leading_zero) {
  size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  size_t digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
    ++i, ++digits;
  if (digits < 1 || digits > 3) return std::string::npos;
  if (!leading_zero && s[i - digits] == '0') return std::string::npos;
  int groups = 0;
  while (i < s.size() && s[i] == separator) {
    ++i;
    for (int k = 0; k < 3; ++k, ++i) {
      if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i])))
        return std::string::npos;
    }
    ++groups;
  }
  return groups > 0 ? i : std::string::npos;
}

bool IsThousandsNumber(const std::string& s) {
  // -?d{1,3}(,ddd)+(.d+)?; "0,111" is not a thousands number (a decimal comma,
  // or a list).
  size_t i = DigitGroupsEnd(s, ',', /*leading_zero=*/false);
  if (i == std::string::npos) return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (i >= s.size()) return false;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  }
  return i == s.size();
}

// "1 000" and "1 000 000": groups of three digits after the first, one space
// apart, and nothing else.
bool IsSpacedThousands(const std::string& s) {
  return DigitGroupsEnd(s, ' ', /*leading_zero=*/true) == s.size();
}

// "\\frac", "\\left(": a doubled backslash before a command name is an
// escaping slip (a string written twice escaped), not a line break followed by
// letters. Only names of commands are mended: "\\x" in a matrix stays a
// line break and x.
std::string SingleBackslashes(const std::string& s) {
  static const auto* names = new std::set<std::string, std::less<>>{
      "frac",  "dfrac", "tfrac",  "sqrt", "left",   "right",    "le",
      "leq",   "ge",    "geq",    "lt",   "gt",     "ne",       "neq",
      "boxed", "text",  "mathrm", "pi",   "cdot",   "times",    "infty",
      "pm",    "mp",    "in",     "cup",  "cap",    "alpha",    "beta",
      "theta", "sin",   "cos",    "tan",  "log",    "ln",       "approx",
      "quad",  "qquad", "begin",  "end",  "mathbf", "emptyset", "dots",
      "ldots", "cdots"};
  if (s.find("\\\\") == std::string::npos) return s;
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && (i == 0 || s[i - 1] != '\\') && i + 2 < s.size() &&
        s[i + 1] == '\\' &&
        std::isalpha(static_cast<unsigned char>(s[i + 2]))) {
      size_t end = i + 2;
      while (end < s.size() && std::isalpha(static_cast<unsigned char>(s[end])))
        ++end;
      if (names->count(absl::string_view(s).substr(i + 2, end - i - 2)) != 0) {
        continue;  // drop the first backslash
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

}  // namespace

std::string NormalizeLatex(absl::string_view answer) {
  std::string s = StripMathDelimiters(answer);
  // Unicode math symbols.
  static const std::vector<std::pair<std::string, std::string>> kUnicode = {
      {"\xE2\x88\x92", "-"},           {"\xC3\x97", "\\times "},
      {"\xC3\xB7", "\\div "},          {"\xC2\xB7", "\\cdot "},
      {"\xE2\x8B\x85", "\\cdot "},     {"\xE2\x88\x9A", "\\sqrt"},
      {"\xCF\x80", "\\pi "},           {"\xE2\x88\x9E", "\\infty "},
      {"\xE2\x89\xA4", "\\le "},       {"\xE2\x89\xA5", "\\ge "},
      {"\xE2\x89\xA0", "\\ne "},       {"\xE2\x88\xAA", "\\cup "},
      {"\xC2\xB1", "\\pm "},           {"\xE2\x88\x93", "\\mp "},
      {"\xE2\x88\x85", "\\emptyset "}, {"\xC2\xB0", ""},
      {"\xE2\x80\x89", " "},           {"\xC2\xA0", " "},
      {"\xE2\x89\x88", "\\approx "},   {"\xE2\x88\x88", "\\in "}};
  for (const auto& [from, to] : kUnicode) s = ReplaceAll(s, from, to);
  s = SingleBackslashes(s);
  s = UnwrapTextCommands(s);
  s = PercentWords(s);
  // "11,\! 111": a thin space after a comma marks thousands, whatever spaces
  // follow.
  const bool thin_after_comma = s.find(",\\!") != std::string::npos ||
                                s.find("{,}\\!") != std::string::npos;
  // Sizing, spacing and style commands; \left. and \right. vanish entirely.
  s = ReplaceAll(s, "\\left.", "");
  s = ReplaceAll(s, "\\right.", "");
  for (const char* command :
       {"\\left",      "\\right",  "\\bigl",  "\\bigr",  "\\Bigl",
        "\\Bigr",      "\\biggl",  "\\biggr", "\\Biggl", "\\Biggr",
        "\\big",       "\\Big",    "\\bigg",  "\\Bigg",  "\\displaystyle",
        "\\textstyle", "\\limits", "\\qquad", "\\quad",  "\\!",
        "\\,",         "\\;",      "\\:",     "\\ "}) {
    for (size_t at = s.find(command); at != std::string::npos;
         at = s.find(command, at)) {
      const size_t len = std::string(command).size();
      // Not the second half of a "\\" line break.
      if (at > 0 && s[at - 1] == '\\') {
        at += len;
        continue;
      }
      // Only whole command names (\left but not \leftarrow); spacing is
      // removed even when glued to a name ("\quadx_2").
      const bool spacing = absl::string_view(command) == "\\quad" ||
                           absl::string_view(command) == "\\qquad";
      if (!spacing &&
          std::isalpha(static_cast<unsigned char>(command[len - 1])) &&
          at + len < s.size() &&
          std::isalpha(static_cast<unsigned char>(s[at + len]))) {
        at += len;
        continue;
      }
      s.erase(at, len);
    }
  }
  s = ReplaceAll(s, "~", " ");
  s = ReplaceAll(s, "\\dfrac", "\\frac");
  s = ReplaceAll(s, "\\tfrac", "\\frac");
  s = ReplaceAll(s, "\\cfrac", "\\frac");
  s = ReplaceAll(s, "\\dbinom", "\\binom");
  s = ReplaceAll(s, "\\tbinom", "\\binom");
  // Degrees.
  for (const char* degree :
       {"^{\\circ}", "^\\circ", "\\circ", "\\degree", "^{o}"}) {
    s = ReplaceAll(s, degree, "");
  }
  // Currency and percent.
  s = ReplaceAll(s, "\\$", "");
  s = ReplaceAll(s, "$", "");
  s = ReplaceAll(s, "\\%", "%");
  // Thousands separators in a lone number: 1,000 / 1{,}000 / 1,\!000 /
  // 1 000. "32, 349" (a space after the comma) is a list.
  s = ReplaceAll(s, "{, }", ",");
  s = ReplaceAll(s, "{,}", ",");
  std::string compact;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != ' ') {
      compact.push_back(s[i]);
    } else if (i > 0 && s[i - 1] == ',' && !thin_after_comma) {
      compact.push_back(' ');
    }
  }
  if (IsThousandsNumber(compact)) {
    s = ReplaceAll(compact, ",", "");
  } else if (IsSpacedThousands(s)) {
    s = ReplaceAll(s, " ", "");
  }
  s = std::string(absl::StripAsciiWhitespace(s));
  // A trailing period ends a sentence, not a number.
  while (!s.empty() && (s.back() == '.' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace microrl::reward
