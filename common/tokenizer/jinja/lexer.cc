#include "common/tokenizer/jinja/lexer.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja/errors.h"
#include "common/tokenizer/jinja/text.h"
#include "common/tokenizer/unicode.h"

namespace microrl::tokenizer::jinja {
namespace {

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

}  // namespace

std::vector<Piece> Lex(absl::string_view source) {
  return Lexer(NormalizeNewlines(source)).Run();
}

}  // namespace microrl::tokenizer::jinja
