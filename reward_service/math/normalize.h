#ifndef MICRORL_REWARD_SERVICE_MATH_NORMALIZE_H_
#define MICRORL_REWARD_SERVICE_MATH_NORMALIZE_H_

#include <cstddef>
#include <optional>
#include <string>

// LaTeX answers normalized for comparison (NormalizeLatex, in math_answer.h,
// is defined in normalize.cc) and the helpers the parser shares.
namespace microrl::reward::math {

// Content of the brace group at s[open] == '{'; sets *end past it.
std::optional<std::string> Group(const std::string& s, size_t open,
                                 size_t* end);

}  // namespace microrl::reward::math

#endif  // MICRORL_REWARD_SERVICE_MATH_NORMALIZE_H_
