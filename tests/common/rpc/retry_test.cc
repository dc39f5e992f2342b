#include "common/rpc/retry.h"

#include <atomic>
#include <limits>
#include <thread>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl::rpc {
namespace {

using ::testing::HasSubstr;

RetryPolicy Fast(int attempts) {
  RetryPolicy policy;
  policy.max_attempts = attempts;
  policy.initial_backoff = absl::Milliseconds(1);
  policy.max_backoff = absl::Milliseconds(4);
  return policy;
}

// RetryUnavailable over a call that always fails with `error`; `calls` counts
// the attempts.
absl::Status RetryFailing(const std::string& what, const RetryPolicy& policy,
                          const absl::Status& error, int* calls) {
  return RetryUnavailable(what, policy, [&] {
    ++*calls;
    return error;
  });
}

TEST(RetryTest, RetriesUnavailableUntilSuccess) {
  int calls = 0;
  absl::Status status = RetryUnavailable("call", Fast(5), [&] {
    return ++calls < 3 ? absl::UnavailableError("down") : absl::OkStatus();
  });
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(calls, 3);
}

TEST(RetryTest, GivesUpSayingHowOften) {
  int calls = 0;
  absl::Status status =
      RetryFailing("rollout Generate", Fast(3),
                   absl::UnavailableError("connection refused"), &calls);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("rollout Generate: unavailable after "
                                          "3 attempts over "));
  EXPECT_THAT(status.message(), HasSubstr(": connection refused"));
}

TEST(RetryTest, GivesUpAfterMaxElapsed) {
  RetryPolicy policy = Fast(std::numeric_limits<int>::max());
  policy.initial_backoff = absl::Milliseconds(10);
  policy.max_backoff = absl::Milliseconds(10);
  policy.max_elapsed = absl::Milliseconds(100);
  int calls = 0;
  absl::Status status =
      RetryFailing("reward Score", policy,
                   absl::UnavailableError("connection refused"), &calls);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("reward Score: unavailable after "));
  // Never more attempts than 100 ms of 10 ms waits allow (plus the first).
  EXPECT_GT(calls, 1);
  EXPECT_LE(calls, 12);
}

TEST(RetryTest, OtherErrorsAreNotRetried) {
  int calls = 0;
  absl::Status status =
      RetryFailing("call", Fast(5), absl::InvalidArgumentError("bad"), &calls);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

// A peer shut down gracefully cancels the calls it serves: retried like
// UNAVAILABLE when the caller can tell its own cancellations apart.
TEST(RetryTest, CancelledByAPeerIsRetried) {
  int calls = 0;
  absl::Status status = RetryUnavailable(
      "rollout Generate", Fast(5),
      [&] {
        return ++calls < 3 ? absl::CancelledError("shutting down")
                           : absl::OkStatus();
      },
      [] { return false; });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(calls, 3);
  // Without a way to tell, CANCELLED may be the caller's own: final.
  calls = 0;
  status = RetryUnavailable("call", Fast(5), [&] {
    ++calls;
    return absl::CancelledError("cancelled");
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
}

// A caller that is stopping ends the retries at once, with CANCELLED, also in
// the middle of a long backoff.
TEST(RetryTest, AStoppingCallerEndsTheWaitAtOnce) {
  RetryPolicy policy = Fast(std::numeric_limits<int>::max());
  policy.initial_backoff = absl::Seconds(600);
  std::atomic<bool> stop{false};
  int calls = 0;
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(100));
    stop = true;
  });
  const absl::Status status = RetryUnavailable(
      "reward Score", policy,
      [&] {
        ++calls;
        return absl::UnavailableError("connection refused");
      },
      [&] { return stop.load(); });
  stopper.join();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(status.message(),
              HasSubstr("reward Score: the caller is stopping"));
  // A real error while stopping is kept as it is.
  EXPECT_EQ(RetryUnavailable(
                "call", policy, [] { return absl::InvalidArgumentError("x"); },
                [] { return true; })
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RetryTest, BacksOffExponentially) {
  RetryPolicy policy = Fast(4);
  policy.initial_backoff = absl::Milliseconds(20);
  policy.max_backoff = absl::Milliseconds(40);
  const absl::Time start = absl::Now();
  (void)RetryUnavailable("call", policy,
                         [] { return absl::UnavailableError("x"); });
  // 20 + 40 + 40 ms between four attempts.
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(95));
}

}  // namespace
}  // namespace microrl::rpc
