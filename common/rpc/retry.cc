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
    const bool stopping = cancelled && cancelled();
    const bool transient =
        status.code() == absl::StatusCode::kUnavailable ||
        status.code() == absl::StatusCode::kCancelled;
    if (stopping && transient) {
      return absl::CancelledError(absl::StrCat(
          what, ": the caller is stopping (last attempt: ", status.message(),
          ")"));
    }
    // CANCELLED is retried only when the caller can tell its own
    // cancellations apart: then it came from a peer shutting down.
    if (!transient ||
        (status.code() == absl::StatusCode::kCancelled && !cancelled)) {
      if (i > 1 && status.ok()) {
        MRL_LOG(INFO) << what << ": available again after "
                      << absl::Trunc(absl::Now() - start, absl::Milliseconds(1))
                      << " (" << i << " attempts)";
      }
      return status;
    }
    const absl::Duration elapsed = absl::Now() - start;
    if (i >= policy.max_attempts || elapsed >= policy.max_elapsed) {
      return absl::UnavailableError(absl::StrCat(
          what, ": unavailable after ", i, " attempts over ",
          absl::FormatDuration(absl::Trunc(elapsed, absl::Milliseconds(1))),
          ": ", status.message()));
    }
    // The last wait ends when max_elapsed does, for one more attempt then.
    const absl::Duration wait = std::min(backoff, policy.max_elapsed - elapsed);
    MRL_LOG(WARNING) << what
                     << (status.code() == absl::StatusCode::kCancelled
                             ? ": cancelled by the peer ("
                             : ": unavailable (")
                     << status.message()
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
    if (cancelled && cancelled()) {
      return absl::CancelledError(
          absl::StrCat(what, ": the caller is stopping (last attempt: ",
                       status.message(), ")"));
    }
    backoff = std::min(policy.max_backoff, backoff * policy.multiplier);
  }
}

}  // namespace microrl::rpc
