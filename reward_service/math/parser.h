#ifndef MICRORL_REWARD_SERVICE_MATH_PARSER_H_
#define MICRORL_REWARD_SERVICE_MATH_PARSER_H_

#include <string>

#include "reward_service/math/budget.h"
#include "reward_service/math/node.h"

// The parser of normalized answers: LaTeX and plain mathematics to a Node tree.
namespace microrl::reward::math {

// Parses a normalized answer; text answers (words, "(A)") and unparseable ones
// become kText (then *error says why the parser refused it).
NodeP ParseOrText(const std::string& normalized, Budget& budget,
                  std::string* error);

// Whether an answer is prose rather than mathematics: it has a word of three or
// more letters that is not a function or constant name.
bool IsWordy(const std::string& normalized);

}  // namespace microrl::reward::math

#endif  // MICRORL_REWARD_SERVICE_MATH_PARSER_H_
