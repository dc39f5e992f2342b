#ifndef MICRORL_TESTS_INTEGRATION_LAUNCHER_H_
#define MICRORL_TESTS_INTEGRATION_LAUNCHER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/ready_file.h"
#include "tests/support/subprocess.h"

namespace microrl::testing {

// One of the project's service binaries, started on loopback with ephemeral
// ports.
struct RunningService {
  std::unique_ptr<Subprocess> process;
  ReadyInfo ready;
  std::string ready_file;

  std::string grpc_address() const;
};

// Starts `binary` with --port=0 --metrics_port=0
// --ready_file=<dir>/<name>.ready plus `args`, and waits until it has written
// its ready file. Fails (with the process's output) if it exits first or is not
// ready within a minute.
absl::StatusOr<RunningService> StartService(
    const std::string& binary, const std::string& name, const std::string& dir,
    const std::vector<std::string>& args = {});

}  // namespace microrl::testing

#endif  // MICRORL_TESTS_INTEGRATION_LAUNCHER_H_
