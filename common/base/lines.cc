#include "common/base/lines.h"

namespace microrl {

absl::Status ForEachNonBlankLine(
    std::istream& in,
    const std::function<absl::Status(int64_t line, const std::string& text)>&
        handle) {
  std::string text;
  int64_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (absl::Status status = handle(line, text); !status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace microrl
