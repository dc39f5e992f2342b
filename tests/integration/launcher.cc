#include "tests/integration/launcher.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace microrl::testing {

std::string RunningService::grpc_address() const {
  return absl::StrCat("127.0.0.1:", ready.grpc_port);
}

absl::StatusOr<RunningService> StartService(
    const std::string& binary, const std::string& name, const std::string& dir,
    const std::vector<std::string>& args) {
  RunningService service;
  service.ready_file = absl::StrCat(dir, "/", name, ".ready");
  std::vector<std::string> argv = {binary, "--port=0", "--metrics_port=0",
                                   "--ready_file=" + service.ready_file};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<std::unique_ptr<Subprocess>> process =
      Subprocess::Start(argv, absl::StrCat(dir, "/", name, ".log"));
  if (!process.ok()) return process.status();
  service.process = std::move(*process);
  const absl::Time deadline = absl::Now() + absl::Minutes(1);
  while (true) {
    absl::StatusOr<ReadyInfo> ready = ReadReadyFile(service.ready_file);
    if (ready.ok()) {
      service.ready = *ready;
      return service;
    }
    if (service.process->Wait(absl::ZeroDuration()).has_value()) {
      return absl::InternalError(absl::StrCat(
          name, " exited before it was ready:\n", service.process->Output()));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          name, " not ready after a minute:\n", service.process->Output()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace microrl::testing
