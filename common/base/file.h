#ifndef MICRORL_COMMON_BASE_FILE_H_
#define MICRORL_COMMON_BASE_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace microrl {

// The whole contents of `path`. NotFound (naming the path) if it cannot be
// read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `bytes` to `path` atomically: a temporary file in the same directory,
// then a rename, so readers never see a partial file.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view bytes);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_FILE_H_
