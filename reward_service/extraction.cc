#include "reward_service/extraction.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "reward_service/math_answer.h"

namespace microrl::reward {
namespace {

constexpr size_t npos = absl::string_view::npos;

bool IsLetter(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) != 0;
}
bool IsDigit(char c) {
  return std::isdigit(static_cast<unsigned char>(c)) != 0;
}
bool IsSpace(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

// Content of the brace group starting at text[open] == '{', and the position
// past its closing brace.
std::optional<std::pair<std::string, size_t>> BraceGroup(absl::string_view text,
                                                         size_t open) {
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {  // escaped brace: \{ \}
      ++i;
      continue;
    }
    if (c == '{') ++depth;
    if (c == '}' && --depth == 0)
      return std::make_pair(std::string(text.substr(open + 1, i - open - 1)),
                            i + 1);
  }
  return std::nullopt;
}

// The start of the last \boxed / \fbox command that begins before `before`.
std::pair<size_t, size_t> LastBoxCommand(absl::string_view text,
                                         size_t before) {
  size_t best = npos;
  size_t name_length = 0;
  for (const absl::string_view command : {"\\boxed", "\\fbox"}) {
    if (before < command.size()) continue;
    size_t at = text.rfind(command, before - command.size());
    // Skip longer command names that merely start the same way (\boxedx).
    while (at != npos) {
      const size_t after = at + command.size();
      if (after >= text.size() || !IsLetter(text[after])) break;
      at = at == 0 ? npos : text.rfind(command, at - 1);
    }
    if (at != npos && (best == npos || at > best)) {
      best = at;
      name_length = command.size();
    }
  }
  return {best, name_length};
}

// The box whose command starts at `at`: its content and where it ends.
std::optional<std::pair<std::string, size_t>> BoxAt(absl::string_view text,
                                                    size_t at,
                                                    size_t name_length) {
  size_t pos = at + name_length;
  while (pos < text.size() && text[pos] == ' ') ++pos;
  if (pos < text.size() && text[pos] == '{') return BraceGroup(text, pos);
  if (pos > at + name_length) {
    // "\boxed 42": up to the next space, '$' or end.
    size_t end = pos;
    while (end < text.size() && text[end] != '$' && !IsSpace(text[end])) ++end;
    if (end > pos)
      return std::make_pair(std::string(text.substr(pos, end - pos)), end);
  }
  return std::nullopt;
}

// Whether `text` has `word` as a whole word, case-insensitively.
bool HasWord(absl::string_view text, absl::string_view word) {
  const std::string lower = absl::AsciiStrToLower(text);
  const std::string needle(word);
  for (size_t at = lower.find(needle); at != std::string::npos;
       at = lower.find(needle, at + 1)) {
    const size_t end = at + word.size();
    if ((at == 0 || !IsLetter(lower[at - 1])) &&
        (end == lower.size() || !IsLetter(lower[end]))) {
      return true;
    }
  }
  return false;
}

// Whether `between` (text between two answers) only separates them.
bool IsSeparator(absl::string_view between) {
  std::string s = absl::AsciiStrToLower(between);
  for (const char* filler :
       {"\\text{", "\\mbox{", "\\quad", "\\qquad", "\\(", "\\)", "\\[", "\\]",
        "$", "}", "{", "\\,", "\\;", "\\\\"}) {
    for (size_t at = s.find(filler); at != std::string::npos;
         at = s.find(filler, at)) {
      s.replace(at, std::string(filler).size(), " ");
    }
  }
  absl::string_view rest = absl::StripAsciiWhitespace(s);
  absl::ConsumePrefix(&rest, ",");
  absl::ConsumePrefix(&rest, ";");
  rest = absl::StripAsciiWhitespace(rest);
  absl::ConsumePrefix(&rest, "and");
  absl::ConsumePrefix(&rest, "or");
  return absl::StripAsciiWhitespace(rest).empty();
}

// ---------------------------------------------------------------- math spans
struct Span {
  size_t begin = 0, end = 0;                  // delimiters included
  size_t content_begin = 0, content_end = 0;  // delimiters excluded
};

bool EscapedAt(absl::string_view text, size_t i) {
  size_t backslashes = 0;
  while (i > backslashes && text[i - 1 - backslashes] == '\\') ++backslashes;
  return backslashes % 2 == 1;
}

// $$...$$ and \[...\] (may span lines), $...$ and \(...\) (one line), left to
// right, not nested. Linear: a delimiter with no closing one is not searched
// for again.
std::vector<Span> MathSpans(absl::string_view text) {
  std::vector<Span> spans;
  bool display_dollar_closes = true, bracket_closes = true;
  size_t i = 0;
  auto close = [&](absl::string_view delimiter, size_t from,
                   bool one_line) -> size_t {
    for (size_t at = text.find(delimiter, from); at != npos;
         at = text.find(delimiter, at + 1)) {
      if (one_line) {
        const size_t newline = text.find('\n', from);
        if (newline != npos && newline < at) return npos;
      }
      if (!EscapedAt(text, at)) return at;
    }
    return npos;
  };
  while (i < text.size()) {
    const char c = text[i];
    if (c == '$' && !EscapedAt(text, i)) {
      if (i + 1 < text.size() && text[i + 1] == '$') {
        const size_t end = display_dollar_closes ? close("$$", i + 2, false)
                                                 : npos;
        if (end == npos) {
          display_dollar_closes = false;
          i += 2;
          continue;
        }
        spans.push_back({i, end + 2, i + 2, end});
        i = end + 2;
        continue;
      }
      const size_t end = close("$", i + 1, true);
      if (end == npos || (end + 1 < text.size() && text[end + 1] == '$')) {
        ++i;
        continue;
      }
      spans.push_back({i, end + 1, i + 1, end});
      i = end + 1;
      continue;
    }
    if (c == '\\' && i + 1 < text.size() && !EscapedAt(text, i) &&
        (text[i + 1] == '[' || text[i + 1] == '(')) {
      const bool display = text[i + 1] == '[';
      const size_t end = display ? (bracket_closes ? close("\\]", i + 2, false)
                                                   : npos)
                                 : close("\\)", i + 2, true);
      if (end == npos) {
        if (display) bracket_closes = false;
        i += 2;
        continue;
      }
      spans.push_back({i, end + 2, i + 2, end});
      i = end + 2;
      continue;
    }
    ++i;
  }
  return spans;
}

// Spans first..last as one answer: "$1$, $2$ and $3$" is "1, 2 and 3" (joined
// with "and" when a word joins them, so that the list is unordered).
std::string JoinSpans(absl::string_view text, const std::vector<Span>& spans,
                      size_t first, size_t last) {
  std::string out;
  for (size_t k = first; k <= last; ++k) {
    const std::string part = StripMathDelimiters(text.substr(
        spans[k].content_begin, spans[k].content_end - spans[k].content_begin));
    if (part.empty()) continue;
    if (!out.empty()) {
      const absl::string_view between =
          text.substr(spans[k - 1].end, spans[k].begin - spans[k - 1].end);
      out += HasWord(between, "or")    ? " or "
             : HasWord(between, "and") ? " and "
                                       : ", ";
    }
    out += part;
  }
  return out;
}

bool JoinedToNext(absl::string_view text, const std::vector<Span>& spans,
                  size_t k) {
  return IsSeparator(text.substr(spans[k].end, spans[k + 1].begin - spans[k].end));
}

// Span `last` and the spans before it joined to it by separators.
std::string JoinedBackward(absl::string_view text,
                           const std::vector<Span>& spans, size_t last) {
  size_t first = last;
  while (first > 0 && last - first < 16 && JoinedToNext(text, spans, first - 1))
    --first;
  return JoinSpans(text, spans, first, last);
}

// Span `first` and the spans after it joined to it by separators.
std::string JoinedForward(absl::string_view text,
                          const std::vector<Span>& spans, size_t first) {
  size_t last = first;
  while (last + 1 < spans.size() && last - first < 16 &&
         JoinedToNext(text, spans, last))
    ++last;
  return JoinSpans(text, spans, first, last);
}

// ---------------------------------------------------------------- numbers
struct NumberMatch {
  size_t begin = 0, end = 0;
  std::string latex;  // 1,000.5 -> 1000.5; 3 x 10^8 -> 3\times10^{8}; 5% ...
};

bool MatchWord(absl::string_view text, size_t at, absl::string_view word) {
  if (at + word.size() > text.size()) return false;
  for (size_t k = 0; k < word.size(); ++k) {
    if (std::tolower(static_cast<unsigned char>(text[at + k])) != word[k])
      return false;
  }
  return at + word.size() == text.size() || !IsLetter(text[at + word.size()]);
}

size_t SkipSpaces(absl::string_view text, size_t i) {
  while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
  return i;
}

// A number-like expression starting at text[i]: an optional sign, digits with
// thousands separators, a decimal part, an exponent (1.5e-3, 3 \times 10^{8}),
// a fraction bar (3/4) and a percent sign or word.
std::optional<NumberMatch> NumberAt(absl::string_view text, size_t i) {
  if (i > 0) {
    const char before = text[i - 1];
    const bool anchored = IsSpace(before) || before == '=' || before == '(' ||
                          before == '[' || before == '$' || before == ':' ||
                          before == '*' || before == '~' || before == ',' ||
                          before == '{' ||
                          static_cast<unsigned char>(before) >= 0x80;
    if (!anchored) return std::nullopt;
  }
  NumberMatch m;
  m.begin = i;
  size_t j = i;
  if (j < text.size() && text[j] == '-') {
    m.latex.push_back('-');
    ++j;
  }
  const size_t digits_start = j;
  while (j < text.size() && IsDigit(text[j])) m.latex.push_back(text[j++]);
  const size_t leading = j - digits_start;
  // Thousands groups: 1,234,567 (the first group 1-3 digits, not 0).
  if (leading >= 1 && leading <= 3 && text[digits_start] != '0') {
    size_t k = j;
    std::string groups;
    while (k + 3 < text.size() && text[k] == ',' && IsDigit(text[k + 1]) &&
           IsDigit(text[k + 2]) && IsDigit(text[k + 3]) &&
           (k + 4 == text.size() || !IsDigit(text[k + 4]))) {
      groups += std::string(text.substr(k + 1, 3));
      k += 4;
    }
    if (!groups.empty()) {
      m.latex += groups;
      j = k;
    }
  }
  // A decimal comma in prose: "2,74 $" (exactly two digits, then no digit).
  if (j + 2 < text.size() + 0 && j > digits_start && text[j] == ',' &&
      IsDigit(text[j + 1]) && IsDigit(text[j + 2]) &&
      (j + 3 == text.size() || !IsDigit(text[j + 3])) &&
      m.latex.find('.') == std::string::npos && leading == j - digits_start) {
    m.latex += "." + std::string(text.substr(j + 1, 2));
    j += 3;
  } else if (j + 1 < text.size() && text[j] == '.' && IsDigit(text[j + 1])) {
    m.latex.push_back('.');
    ++j;
    while (j < text.size() && IsDigit(text[j])) m.latex.push_back(text[j++]);
  }
  if (j == digits_start) return std::nullopt;
  // Exponents.
  if (j + 1 < text.size() && (text[j] == 'e' || text[j] == 'E')) {
    size_t k = j + 1;
    if (k < text.size() && (text[k] == '+' || text[k] == '-')) ++k;
    if (k < text.size() && IsDigit(text[k])) {
      while (k < text.size() && IsDigit(text[k])) ++k;
      m.latex += std::string(text.substr(j, k - j));
      j = k;
    }
  } else {
    size_t k = SkipSpaces(text, j);
    size_t times = 0;
    for (absl::string_view op : {"\\times", "\\cdot", "\xC3\x97", "*", "x"}) {
      if (text.substr(k, op.size()) == op) {
        times = op.size();
        break;
      }
    }
    if (times > 0) {
      k = SkipSpaces(text, k + times);
      if (text.substr(k, 2) == "10") {
        k = SkipSpaces(text, k + 2);
        if (k < text.size() && text[k] == '^') {
          k = SkipSpaces(text, k + 1);
          std::string exponent;
          const bool braced = k < text.size() && text[k] == '{';
          size_t e = braced ? k + 1 : k;
          if (e < text.size() && (text[e] == '-' || text[e] == '+'))
            exponent.push_back(text[e++]);
          const size_t exponent_digits = e;
          while (e < text.size() && IsDigit(text[e]) &&
                 (braced || e == exponent_digits))
            exponent.push_back(text[e++]);
          if (e > exponent_digits && (!braced || (e < text.size() &&
                                                  text[e] == '}'))) {
            m.latex += "\\times10^{" + exponent + "}";
            j = braced ? e + 1 : e;
          }
        }
      }
    }
  }
  // A fraction bar between integers: 3/4.
  if (j + 1 < text.size() && text[j] == '/' && IsDigit(text[j + 1])) {
    size_t k = j + 1;
    while (k < text.size() && IsDigit(text[k])) ++k;
    m.latex += "/" + std::string(text.substr(j + 1, k - j - 1));
    j = k;
  }
  // Percent.
  size_t k = SkipSpaces(text, j);
  if (k < text.size() && text[k] == '%') {
    m.latex.push_back('%');
    j = k + 1;
  } else if (text.substr(k, 2) == "\\%") {
    m.latex.push_back('%');
    j = k + 2;
  } else {
    for (absl::string_view word : {"percentage", "percent", "pct"}) {
      if (MatchWord(text, k, word)) {
        m.latex.push_back('%');
        j = k + word.size();
        break;
      }
    }
  }
  m.end = j;
  return m;
}

// Number-like expressions of `text`, left to right, not overlapping.
std::vector<NumberMatch> Numbers(absl::string_view text) {
  std::vector<NumberMatch> out;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (IsDigit(c) || (c == '-' && i + 1 < text.size() && IsDigit(text[i + 1]))) {
      if (std::optional<NumberMatch> m = NumberAt(text, i)) {
        i = m->end;
        out.push_back(std::move(*m));
        continue;
      }
      // Skip the rest of a run of digits glued to letters (AZ2Y).
      while (i < text.size() && (IsDigit(text[i]) || text[i] == '-')) ++i;
      continue;
    }
    ++i;
  }
  return out;
}

// ---------------------------------------------------------------- sentences
// Where the sentence containing position `from` ends: a newline, or a period
// followed by a space or the end (not a decimal point).
size_t SentenceEnd(absl::string_view text, size_t from) {
  for (size_t i = from; i < text.size(); ++i) {
    if (text[i] == '\n') return i;
    if (text[i] == '.' && (i + 1 == text.size() || IsSpace(text[i + 1])))
      return i;
  }
  return text.size();
}

// The start of the last sentence of `text` (ignoring a final period).
size_t LastSentenceStart(absl::string_view text) {
  size_t end = text.size();
  while (end > 0 && (IsSpace(text[end - 1]) || text[end - 1] == '.')) --end;
  for (size_t i = end; i > 0; --i) {
    const char c = text[i - 1];
    if (c == '\n') return i;
    if (c == '.' && i < text.size() && IsSpace(text[i])) return i;
  }
  return 0;
}

size_t CountWords(absl::string_view text) {
  size_t words = 0;
  bool in_word = false;
  for (char c : text) {
    const bool letter = !IsSpace(c);
    if (letter && !in_word) ++words;
    in_word = letter;
  }
  return words;
}

// An extracted candidate without wrappers, a sentence's final punctuation or
// surrounding markup.
std::string Clean(absl::string_view candidate) {
  std::string s = StripMathDelimiters(candidate);
  absl::string_view v = s;
  for (bool changed = true; changed;) {
    changed = false;
    v = absl::StripAsciiWhitespace(v);
    for (absl::string_view suffix : {".", ",", ";", "**", ":", "$"}) {
      if (absl::ConsumeSuffix(&v, suffix)) changed = true;
    }
    for (absl::string_view prefix : {"**", ":", "$"}) {
      if (absl::ConsumePrefix(&v, prefix)) changed = true;
    }
  }
  return StripMathDelimiters(v);
}

// A plain-text candidate's answer: itself when it is mathematics, else the
// first number-like expression in it, else itself when it is a short text.
std::optional<std::string> AnswerIn(absl::string_view candidate) {
  std::string cleaned = Clean(candidate);
  if (cleaned.empty()) return std::nullopt;
  if (!LooksLikeProse(cleaned)) return cleaned;
  const std::vector<NumberMatch> numbers = Numbers(cleaned);
  if (!numbers.empty()) return numbers.front().latex;
  if (CountWords(cleaned) <= 4 && cleaned.size() <= 60) return cleaned;
  return std::nullopt;
}

// A math span's answer: its content as written (not searched for numbers:
// "$x^2 + 1$" is the answer, whatever it looks like).
std::optional<std::string> MathAnswer(absl::string_view content) {
  std::string cleaned = Clean(content);
  if (cleaned.empty()) return std::nullopt;
  return cleaned;
}

struct Found {
  std::string text;
  size_t position = 0;  // where the phrase starts
};

// The answer after the last occurrence of `phrase` that introduces one:
// "final answer ... is X" (an "is" within 100 characters), else the first math
// within the window after the phrase, else the rest of its sentence.
std::optional<Found> AfterPhrase(absl::string_view text, absl::string_view lower,
                                 const std::vector<Span>& spans,
                                 const std::string& phrase) {
  const size_t window = phrase.find("final") != std::string::npos ? 100 : 60;
  for (size_t at = lower.rfind(phrase); at != npos;
       at = at == 0 ? npos : lower.rfind(phrase, at - 1)) {
    size_t end = at + phrase.size();
    // Whole words only ("answered" is not "answer").
    if ((at > 0 && IsLetter(lower[at - 1])) ||
        (end < lower.size() && IsLetter(lower[end]))) {
      continue;
    }
    // "Final Answer: The largest $n$ is 34.": the answer follows the "is".
    const size_t sentence_end = SentenceEnd(text, end);
    for (size_t is = lower.find(" is", end);
         is != npos && is <= end + window && is < sentence_end;
         is = lower.find(" is", is + 1)) {
      if (is + 3 < lower.size() && IsLetter(lower[is + 3])) continue;
      // Not inside a math span.
      bool in_math = false;
      for (const Span& span : spans) {
        if (span.begin <= is && is < span.end) in_math = true;
      }
      if (in_math) continue;
      end = is + 3;
      break;
    }
    // The first math within the window.
    for (size_t k = 0; k < spans.size(); ++k) {
      if (spans[k].begin < end) continue;
      const absl::string_view gap = text.substr(end, spans[k].begin - end);
      if (spans[k].begin > end + window || gap.find('\n') != npos) break;
      if (std::optional<std::string> answer =
              MathAnswer(JoinedForward(text, spans, k))) {
        return Found{*answer, at};
      }
      break;
    }
    // Else the rest of the sentence: "Answer: 42.", "the answer is 5 apples".
    size_t from = end;
    for (bool changed = true; changed;) {
      changed = false;
      from = SkipSpaces(text, from);
      for (absl::string_view filler : {":", "**", "is", "=", "\"", "'"}) {
        if (lower.substr(from, filler.size()) == filler &&
            (filler != "is" || from + 2 >= lower.size() ||
             !IsLetter(lower[from + 2]))) {
          from += filler.size();
          changed = true;
        }
      }
    }
    // Math opened after the phrase and never closed on its line ("Answer $
    // <newline> 9 <newline> $"): the stated answer is malformed.
    if (text.substr(from, 1) == "$" || text.substr(from, 2) == "\\(") {
      return Found{"", at};
    }
    const size_t stop = std::min(SentenceEnd(text, from), from + 300);
    if (stop <= from) continue;
    if (std::optional<std::string> answer =
            AnswerIn(text.substr(from, stop - from))) {
      return Found{*answer, at};
    }
  }
  return std::nullopt;
}

// Whether `inner` holds an unescaped `delimiter` ("$a$ and $b$" is not one
// math span).
bool HasDelimiter(absl::string_view inner, absl::string_view delimiter) {
  for (size_t at = inner.find(delimiter); at != npos;
       at = inner.find(delimiter, at + 1)) {
    if (!EscapedAt(inner, at)) return true;
  }
  return false;
}

}  // namespace

const char* AnswerSourceName(AnswerSource source) {
  return NameOf(source, kAnswerSourceNames);
}

std::optional<std::string> LastBoxed(absl::string_view text) {
  const auto [at, name_length] = LastBoxCommand(text, text.size());
  if (at == npos) return std::nullopt;
  std::optional<std::pair<std::string, size_t>> box =
      BoxAt(text, at, name_length);
  if (!box) return std::nullopt;
  return box->first;
}

std::vector<std::string> TrailingBoxes(absl::string_view text,
                                       bool* joined_by_words) {
  std::vector<std::string> boxes;
  if (joined_by_words != nullptr) *joined_by_words = false;
  auto [at, name_length] = LastBoxCommand(text, text.size());
  if (at == npos) return boxes;
  std::optional<std::pair<std::string, size_t>> box =
      BoxAt(text, at, name_length);
  if (!box) return boxes;
  boxes.push_back(box->first);
  while (boxes.size() < 64 && at > 0) {
    const auto [previous, previous_length] = LastBoxCommand(text, at);
    if (previous == npos) break;
    std::optional<std::pair<std::string, size_t>> earlier =
        BoxAt(text, previous, previous_length);
    if (!earlier || earlier->second > at) break;
    const absl::string_view between =
        text.substr(earlier->second, at - earlier->second);
    // Joined when close ("\boxed{1}, \boxed{2}"), or a little further apart
    // with a separator between different answers ("\boxed{1} papers and
    // \boxed{2} bins").
    const bool words = HasWord(between, "and") || HasWord(between, "or");
    const bool separated = words || between.find(',') != npos ||
                           between.find(';') != npos;
    if (!(between.size() < 10 ||
          (earlier->first != boxes.back() && between.size() < 70 &&
           separated))) {
      break;
    }
    if (words && joined_by_words != nullptr) *joined_by_words = true;
    if (earlier->first != boxes.back()) boxes.push_back(earlier->first);
    at = previous;
  }
  std::reverse(boxes.begin(), boxes.end());
  return boxes;
}

std::string StripMathDelimiters(absl::string_view answer) {
  absl::string_view s = absl::StripAsciiWhitespace(answer);
  bool changed = true;
  while (changed && !s.empty()) {
    changed = false;
    for (const auto& [open, close] :
         {std::pair{"$$", "$$"}, std::pair{"$", "$"}, std::pair{"\\(", "\\)"},
          std::pair{"\\[", "\\]"}}) {
      const absl::string_view o = open, c = close;
      if (s.size() >= o.size() + c.size() && absl::StartsWith(s, o) &&
          absl::EndsWith(s, c) && !HasDelimiter(s.substr(o.size(), s.size() - o.size() - c.size()), o)) {
        s = absl::StripAsciiWhitespace(
            s.substr(o.size(), s.size() - o.size() - c.size()));
        changed = true;
        break;
      }
    }
  }
  return std::string(s);
}

std::optional<ExtractedAnswer> FindAnswer(absl::string_view text,
                                          const ExtractionOptions& options) {
  const bool free_text = !options.fallback_phrases.empty();
  const std::string lower = absl::AsciiStrToLower(text);
  std::vector<Span> spans;
  bool have_spans = false;
  auto math_spans = [&]() -> const std::vector<Span>& {
    if (!have_spans) spans = MathSpans(text);
    have_spans = true;
    return spans;
  };
  // 1. \boxed{}, with the boxes joined to the last one; but a "final answer"
  // stated after the last box is the answer ("\boxed{200} ... The final answer
  // is $10,455$.").
  bool worded = false;
  std::vector<std::string> boxes = TrailingBoxes(text, &worded);
  if (!boxes.empty()) {
    if (free_text) {
      const size_t last_box = LastBoxCommand(text, text.size()).first;
      for (const std::string& phrase : options.fallback_phrases) {
        const std::string needle = absl::AsciiStrToLower(phrase);
        if (needle.find("final") == std::string::npos) continue;
        std::optional<Found> found = AfterPhrase(text, lower, math_spans(), needle);
        if (found && !found->text.empty() && found->position > last_box) {
          return ExtractedAnswer{found->text, AnswerSource::kPhrase};
        }
      }
    }
    for (std::string& box : boxes) box = StripMathDelimiters(box);
    return ExtractedAnswer{absl::StrJoin(boxes, worded ? " and " : ", "),
                           AnswerSource::kBoxed};
  }
  // 2. A bare answer: the whole text is mathematics.
  // Bare answers are short: a long text is searched, not parsed whole.
  constexpr size_t kBareAnswerChars = 2000;
  const std::string whole =
      Clean(text.size() > kBareAnswerChars ? text.substr(0, 0) : text);
  if (!whole.empty() && !LooksLikeProse(whole) && !HasDelimiter(whole, "$") &&
      !HasDelimiter(whole, "\\[") && !HasDelimiter(whole, "\\(")) {
    return ExtractedAnswer{whole, AnswerSource::kWhole};
  }
  if (!free_text) return std::nullopt;
  // 3. After a phrase.
  for (const std::string& phrase : options.fallback_phrases) {
    const std::string needle = absl::AsciiStrToLower(phrase);
    if (needle.empty()) continue;
    if (std::optional<Found> found =
            AfterPhrase(text, lower, math_spans(), needle)) {
      if (found->text.empty()) return std::nullopt;  // malformed
      return ExtractedAnswer{found->text, AnswerSource::kPhrase};
    }
  }
  // 4-6. The last display or inline math, the right-hand side of the last '='
  // of the last sentence, the last number-like expression of plain text:
  // whichever ends last.
  std::optional<ExtractedAnswer> best;
  size_t best_end = 0;
  auto offer = [&](std::optional<std::string> answer, AnswerSource source,
                   size_t end) {
    if (answer && (!best || end > best_end)) {
      best = ExtractedAnswer{*answer, source};
      best_end = end;
    }
  };
  const std::vector<Span>& all_spans = math_spans();
  for (size_t k = all_spans.size(); k > 0; --k) {
    std::optional<std::string> answer =
        MathAnswer(JoinedBackward(text, all_spans, k - 1));
    if (answer) {
      offer(answer, AnswerSource::kMath, all_spans[k - 1].end);
      break;
    }
  }
  const size_t sentence = LastSentenceStart(text);
  const absl::string_view last = text.substr(sentence);
  size_t equals = npos, equals_length = 0;
  for (absl::string_view op : {"=", "\\approx", "\xE2\x89\x88"}) {
    const size_t at = last.rfind(op);
    if (at != npos && (equals == npos || at > equals)) {
      equals = at;
      equals_length = op.size();
    }
  }
  const auto inside_math = [&](size_t position) {
    for (const Span& span : all_spans) {
      if (span.begin <= position && position < span.end) return true;
    }
    return false;
  };
  if (equals != npos && !inside_math(sentence + equals)) {
    const size_t from = equals + equals_length;
    const size_t stop = SentenceEnd(last, from);
    offer(AnswerIn(last.substr(from, stop - from)), AnswerSource::kEquals,
          sentence + stop);
  }
  const std::vector<NumberMatch> numbers = Numbers(text);
  for (size_t k = numbers.size(); k > 0; --k) {
    if (inside_math(numbers[k - 1].begin)) continue;
    offer(numbers[k - 1].latex, AnswerSource::kNumber, numbers[k - 1].end);
    break;
  }
  if (best) return best;
  // 7. A short text answer.
  if (!whole.empty() && CountWords(whole) <= 6 && whole.size() <= 80 &&
      whole.find('\n') == std::string::npos) {
    return ExtractedAnswer{whole, AnswerSource::kText};
  }
  return std::nullopt;
}

std::optional<std::string> ExtractAnswer(absl::string_view text,
                                         const ExtractionOptions& options) {
  std::optional<ExtractedAnswer> found = FindAnswer(text, options);
  if (!found) return std::nullopt;
  return std::move(found->text);
}

}  // namespace microrl::reward
