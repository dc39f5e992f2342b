#ifndef MICRORL_TOOLS_MICRORL_STATUS_COMMAND_H_
#define MICRORL_TOOLS_MICRORL_STATUS_COMMAND_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/rpc/security.h"

namespace microrl::cli {

struct StatusCommandOptions {
  // host:port of each service to query; empty ones are skipped.
  std::string rollout_address;
  std::string reward_address;
  std::string learner_address;
  absl::Duration timeout = absl::Seconds(2);
  // TLS and token for services that require them (the same for all).
  rpc::ClientSecurity security;
};

// `microrl status`: for each given service, its health and GetInfo summary, one
// line each:
//   reward   127.0.0.1:50052  SERVING  reward_service 0.1.0 pid 4242 up 3.1s
//   metrics :9402
// Returns OK if every given service is SERVING, else Unavailable naming the
// ones that are not (their lines are printed too).
absl::Status RunStatusCommand(const StatusCommandOptions& options,
                              std::ostream& out);

}  // namespace microrl::cli

#endif  // MICRORL_TOOLS_MICRORL_STATUS_COMMAND_H_
