#ifndef MICRORL_TESTS_SUPPORT_SUBPROCESS_H_
#define MICRORL_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace microrl::testing {

// How a child process ended.
struct ExitInfo {
  bool exited =
      false;  // true: exit code in `code`; false: killed by signal `signal`
  int code = 0;
  int signal = 0;
};

// A child process started with fork/exec, stdout and stderr going to one file.
// Not thread-safe. The destructor kills (SIGKILL) and reaps a child still
// running.
class Subprocess {
 public:
  // Starts argv[0] (a path) with arguments argv[1..]; output goes to
  // `output_path`. The child starts with no signals blocked.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const std::vector<std::string>& argv, const std::string& output_path);

  ~Subprocess();

  pid_t pid() const { return pid_; }
  void Signal(int sig);

  // Waits up to `timeout` for the child to end; nullopt if it is still running.
  std::optional<ExitInfo> Wait(absl::Duration timeout);

  // Everything the child wrote so far.
  std::string Output() const;

 private:
  Subprocess(pid_t pid, std::string output_path)
      : pid_(pid), output_path_(std::move(output_path)) {}

  pid_t pid_;
  std::string output_path_;
  std::optional<ExitInfo> exit_;
};

// Runs argv to completion (killing it after `timeout`) and returns how it ended
// and what it printed.
struct RunResult {
  ExitInfo exit;
  std::string output;
};
absl::StatusOr<RunResult> RunToCompletion(const std::vector<std::string>& argv,
                                          const std::string& output_path,
                                          absl::Duration timeout);

// A fresh directory under $TEST_TMPDIR or /tmp, named after the running test.
// Removed with what it holds when the process exits, unless a test failed.
std::string MakeTempDir();

// Polls `path` until it exists or `timeout` passes.
bool WaitForFile(const std::string& path, absl::Duration timeout);

// A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot
// bind port 0 and report it).
int PickFreePort();

// A loopback TCP port that is bound but not listening for as long as this
// object lives: connecting to it is refused, and no other process can take it
// meanwhile.
class ClosedPort {
 public:
  ClosedPort();
  ~ClosedPort();
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace microrl::testing

#endif  // MICRORL_TESTS_SUPPORT_SUBPROCESS_H_
