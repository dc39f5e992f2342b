#ifndef MICRORL_COMMON_TOKENIZER_JINJA_ERRORS_H_
#define MICRORL_COMMON_TOKENIZER_JINJA_ERRORS_H_

#include <cstddef>
#include <cstdint>
#include <string>

// Internal to the Jinja renderer (common/tokenizer/jinja/): how parsing and
// rendering fail, and the limits they enforce.
namespace microrl::tokenizer::jinja {

// ------------------------------------------------------------------ errors
// Rendering and parsing report errors by throwing; Template catches at its API.
struct Error {
  int line;
  std::string message;
};
[[noreturn]] inline void Fail(int line, std::string message) {
  throw Error{line, std::move(message)};
}

// A {{ raise_exception(...) }} from the template itself.
struct Raised {
  std::string message;
};

constexpr size_t kMaxOutputBytes = 64 << 20;
constexpr int64_t kMaxLoopIterations = 100'000;
constexpr int kMaxDepth = 200;

}  // namespace microrl::tokenizer::jinja

#endif  // MICRORL_COMMON_TOKENIZER_JINJA_ERRORS_H_
