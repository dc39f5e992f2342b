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

// Deletes `path` and everything below it (no error if it does not exist),
// with POSIX calls: std::filesystem::remove_all must not be used in a binary
// that links LibTorch, whose libtorch.so exports its own, incompatible copy
// (it crashes; see docs/development.md).
absl::Status RemoveTree(const std::string& path);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_FILE_H_
