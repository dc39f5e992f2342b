#ifndef MICRORL_COMMON_RPC_RETRY_H_
#define MICRORL_COMMON_RPC_RETRY_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace microrl::rpc {

// Retries transient failures (see RetryUnavailable) with exponential backoff.
struct RetryPolicy {
  int max_attempts = 6;
  // Gives up when an attempt fails this long after the first one; the last
  // wait is shortened to end then (whichever of the two limits comes first).
  absl::Duration max_elapsed = absl::InfiniteDuration();
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  double multiplier = 2.0;
};

// Runs `attempt` until it returns anything but a transient failure, or
// max_attempts have failed, or max_elapsed would be passed; returns the last
// status (UNAVAILABLE, its message saying how many attempts were made, when it
// gave up). Transient: UNAVAILABLE (a peer starting, restarting, asleep, or
// down), and CANCELLED that the caller did not cause (a peer shut down
// gracefully cancels the calls it is serving, and comes back). `what` names
// the call in logs and errors. `cancelled`, if set, says the caller is
// stopping: a CANCELLED attempt is then final and the waits between attempts
// end at once. Without it, CANCELLED is never retried (the caller may have
// cancelled the call itself).
absl::Status RetryUnavailable(const std::string& what,
                              const RetryPolicy& policy,
                              const std::function<absl::Status()>& attempt,
                              const std::function<bool()>& cancelled = {});

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_RETRY_H_
