#ifndef MICRORL_COMMON_BASE_FILE_H_
#define MICRORL_COMMON_BASE_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace microrl {

// The whole contents of `path`. NotFound (naming the path) if it cannot be
// read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `bytes` to `path` atomically and durably: a temporary file in the
// same directory, written and fsynced, renamed over `path`, then the directory
// fsynced. Readers never see a partial file, and after a crash or power loss
// `path` holds the old or the new contents, never an empty or torn file. The
// temporary file is removed when any step fails.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view bytes);

// fsync of a directory, so that the entries created, renamed or removed in it
// survive a crash.
absl::Status SyncDirectory(const std::string& dir);

// Appends `bytes` to `path` (created if missing); with `sync`, fsyncs the file
// after (and its directory when the file was created). A failed append (e.g. a
// full disk) truncates the file back to its previous size, so it never ends in
// a torn record; the error names the path.
absl::Status AppendToFile(const std::string& path, absl::string_view bytes,
                          bool sync = false);

// fsync of a file's contents (NotFound-like Internal error naming it if it
// cannot be opened).
absl::Status SyncFile(const std::string& path);

// Deletes `path` and everything below it (no error if it does not exist),
// with POSIX calls: std::filesystem::remove_all must not be used in a binary
// that links LibTorch, whose libtorch.so exports its own, incompatible copy
// (it crashes; see docs/development.md).
absl::Status RemoveTree(const std::string& path);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_FILE_H_
