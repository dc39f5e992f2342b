#include "common/base/signals.h"

#include <signal.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace microrl {
namespace {

// Each case runs in a child process (a death test): signals are per process,
// and a SIGTERM that found a thread without the mask would end the test binary.
class SignalsDeathTest : public testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// Exits with the number of the first expectation that fails, 0 if none does.
void TakeWhatWasSent() {
  BlockTerminationSignals();
  if (TakePendingTerminationSignal() != 0) _exit(1);
  kill(getpid(), SIGTERM);  // process-directed, as `kill PID` sends it
  if (TakePendingTerminationSignal() != SIGTERM) _exit(2);
  if (TakePendingTerminationSignal() != 0) _exit(3);  // taken: gone
  kill(getpid(), SIGINT);
  if (TakePendingTerminationSignal() != SIGINT) _exit(4);
  RequestTermination();
  if (!IsTerminationRequest(TakePendingTerminationSignal())) _exit(5);
  if (TakePendingTerminationSignal() != 0) _exit(6);
  _exit(0);
}

TEST_F(SignalsDeathTest, TakesAPendingSignalWithoutWaiting) {
  EXPECT_EXIT(TakeWhatWasSent(), testing::ExitedWithCode(0), "");
}

void UnblockedSigtermEndsTheProcess() {
  BlockTerminationSignals();
  UnblockTerminationSignals();
  kill(getpid(), SIGTERM);
  _exit(0);  // not reached: SIGTERM's default action
}

TEST_F(SignalsDeathTest, UnblockRestoresTheDefaultAction) {
  EXPECT_EXIT(UnblockedSigtermEndsTheProcess(),
              testing::KilledBySignal(SIGTERM), "");
}

}  // namespace
}  // namespace microrl
