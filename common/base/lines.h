#ifndef MICRORL_COMMON_BASE_LINES_H_
#define MICRORL_COMMON_BASE_LINES_H_

#include <cstdint>
#include <functional>
#include <istream>
#include <string>

#include "absl/status/status.h"

namespace microrl {

// Calls `handle(line, text)` on each line of `in` that is not blank (spaces,
// tabs and a trailing CR count as blank), `line` counting from 1 over all
// lines. Stops at the first error `handle` returns, and returns it: JSONL
// readers name the file and line in their errors this way.
absl::Status ForEachNonBlankLine(
    std::istream& in,
    const std::function<absl::Status(int64_t line, const std::string& text)>&
        handle);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_LINES_H_
