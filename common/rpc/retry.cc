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
  const absl::Time start = absl::Now();
  for (int i = 1;; ++i) {
    absl::Status status = attempt();
    if (status.code() != absl::StatusCode::kUnavailable) {
      if (i > 1 && status.ok()) {
        MRL_LOG(INFO) << what << ": available again after "
                      << absl::Trunc(absl::Now() - start, absl::Milliseconds(1))
                      << " (" << i << " attempts)";
      }
      return status;
    }
    const absl::Duration elapsed = absl::Now() - start;
    if (i >= policy.max_attempts || elapsed >= policy.max_elapsed ||
        (cancelled && cancelled())) {
      return absl::UnavailableError(absl::StrCat(
          what, ": unavailable after ", i, " attempts over ",
          absl::FormatDuration(absl::Trunc(elapsed, absl::Milliseconds(1))),
          ": ", status.message()));
    }
    // The last wait ends when max_elapsed does, for one more attempt then.
    const absl::Duration wait = std::min(backoff, policy.max_elapsed - elapsed);
    MRL_LOG(WARNING) << what << ": unavailable (" << status.message()
                     << "), attempt " << i << "; retrying in " << wait
                     << (policy.max_elapsed == absl::InfiniteDuration()
                             ? std::string()
                             : absl::StrCat(
                                   " (giving up after ",
                                   absl::FormatDuration(policy.max_elapsed),
                                   ")"));
    // Sleep in small slices so a cancellation is noticed.
    const absl::Time until = absl::Now() + wait;
    while (absl::Now() < until && !(cancelled && cancelled())) {
      absl::SleepFor(std::min(absl::Milliseconds(50), until - absl::Now()));
    }
    backoff = std::min(policy.max_backoff, backoff * policy.multiplier);
  }
}

}  // namespace microrl::rpc
