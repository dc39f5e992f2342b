#ifndef MICRORL_COMMON_TOKENIZER_JINJA_LEXER_H_
#define MICRORL_COMMON_TOKENIZER_JINJA_LEXER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

// The Jinja lexer.
namespace microrl::tokenizer::jinja {

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

// The template cut into text, {{ expression }} and {% statement %} pieces
// (comments dropped, whitespace control and trim/lstrip_blocks applied, one
// trailing newline dropped); newlines normalized to \n.
std::vector<Piece> Lex(absl::string_view source);

}  // namespace microrl::tokenizer::jinja

#endif  // MICRORL_COMMON_TOKENIZER_JINJA_LEXER_H_
