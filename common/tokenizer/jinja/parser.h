#ifndef MICRORL_COMMON_TOKENIZER_JINJA_PARSER_H_
#define MICRORL_COMMON_TOKENIZER_JINJA_PARSER_H_

#include <vector>

#include "common/tokenizer/jinja/lexer.h"
#include "common/tokenizer/jinja/nodes.h"

namespace microrl::tokenizer::jinja {

// The template's nodes from its pieces (Lex); a syntax error Fails with the
// line.
Body ParseNodes(std::vector<Piece> pieces);

}  // namespace microrl::tokenizer::jinja

#endif  // MICRORL_COMMON_TOKENIZER_JINJA_PARSER_H_
