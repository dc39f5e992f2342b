#include "common/rpc/retry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"

namespace microrl::rpc {

absl::Status RetryUnavailable(const std::string& what,
                              const RetryPolicy& policy,
                              const std::function<absl::Status()>& attempt,
                              const std::function<bool()>& cancelled) {
  absl::Duration backoff = policy.initial_backoff;
  for (int i = 1;; ++i) {
    absl::Status status = attempt();
    if (status.code() != absl::StatusCode::kUnavailable) return status;
    if (i >= policy.max_attempts || (cancelled && cancelled())) {
      return absl::UnavailableError(absl::StrCat(
          what, ": unavailable after ", i, " attempts: ", status.message()));
    }
    MRL_LOG(WARNING) << what << ": unavailable (" << status.message()
                     << "), attempt " << i << " of " << policy.max_attempts
                     << "; retrying in " << backoff;
    // Sleep in small slices so a cancellation is noticed.
    const absl::Time until = absl::Now() + backoff;
    while (absl::Now() < until && !(cancelled && cancelled())) {
      absl::SleepFor(std::min(absl::Milliseconds(50), until - absl::Now()));
    }
    backoff = std::min(policy.max_backoff, backoff * policy.multiplier);
  }
}

}  // namespace microrl::rpc
