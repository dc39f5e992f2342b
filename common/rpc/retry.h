#ifndef MICRORL_COMMON_RPC_RETRY_H_
#define MICRORL_COMMON_RPC_RETRY_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace microrl::rpc {

// Retries on UNAVAILABLE (a peer starting, restarting or asleep), with
// exponential backoff.
struct RetryPolicy {
  int max_attempts = 6;
  // Gives up when an attempt fails this long after the first one; the last
  // wait is shortened to end then (whichever of the two limits comes first).
  absl::Duration max_elapsed = absl::InfiniteDuration();
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  double multiplier = 2.0;
};

// Runs `attempt` until it returns anything but UNAVAILABLE, or max_attempts
// have failed, or max_elapsed would be passed; returns the last status, its
// message saying how many attempts were made when it gave up. `what` names the
// call in logs and errors. `cancelled`, if set, stops the waiting between
// attempts.
absl::Status RetryUnavailable(const std::string& what,
                              const RetryPolicy& policy,
                              const std::function<absl::Status()>& attempt,
                              const std::function<bool()>& cancelled = {});

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_RETRY_H_
