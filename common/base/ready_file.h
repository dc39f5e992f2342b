#ifndef MICRORL_COMMON_BASE_READY_FILE_H_
#define MICRORL_COMMON_BASE_READY_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace microrl {

// What a service announces once it is serving (its --ready_file): the ports it
// really listens on (useful with port 0) and its pid. Stored as one JSON
// object:
//   {"component": "reward_service", "grpc_port": 41234, "metrics_port": 41235,
//   "pid": 77}
struct ReadyInfo {
  std::string component;
  int grpc_port = 0;
  int metrics_port = 0;
  int64_t pid = 0;
};

// Writes `info` to `path` atomically (a temporary file in the same directory,
// renamed), so a reader never sees a partial file.
absl::Status WriteReadyFile(const std::string& path, const ReadyInfo& info);

// Reads a file written by WriteReadyFile. NotFound if it does not exist (yet).
absl::StatusOr<ReadyInfo> ReadReadyFile(const std::string& path);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_READY_FILE_H_
