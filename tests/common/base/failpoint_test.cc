#include "common/base/failpoint.h"

#include <signal.h>
#include <stdlib.h>

#include "gtest/gtest.h"

namespace microrl {
namespace {

// The points are read from the environment once, at the first Failpoint call
// of the process: everything is in one test (ctest runs each in a process).
TEST(FailpointTest, FiresAsTheEnvironmentSays) {
  EXPECT_TRUE(CheckFailpointSpec("").ok());
  EXPECT_TRUE(CheckFailpointSpec("a=error,b=kill@3,c=error@2+").ok());
  for (const char* bad :
       {"a", "a=explode", "a=error@0", "a=error@x", "=kill"}) {
    const absl::Status status = CheckFailpointSpec(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(status.message().find(bad), std::string::npos) << status;
  }

  ASSERT_EQ(
      setenv(
          "MICRORL_FAILPOINTS",
          "test.second=error@2,test.all=error,test.kill=kill,test.on=error@2+",
          1),
      0);
  EXPECT_TRUE(Failpoint("test.second").ok());
  const absl::Status second =
      Failpoint("test.second", absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(second.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(second.message().find("failpoint test.second"), std::string::npos);
  EXPECT_TRUE(Failpoint("test.second").ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Failpoint("test.all").code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_TRUE(Failpoint("test.unnamed").ok());
  EXPECT_TRUE(Failpoint("test.on").ok());
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(Failpoint("test.on").ok());
  // A kill point ends the process with SIGKILL, as a power cut would.
  EXPECT_EXIT((void)Failpoint("test.kill"), ::testing::KilledBySignal(SIGKILL),
              "");
}

}  // namespace
}  // namespace microrl
