#ifndef MICRORL_COMMON_BASE_FILE_H_
#define MICRORL_COMMON_BASE_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace microrl {

// The whole contents of `path`. NotFound (naming the path) if it cannot be read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_FILE_H_
