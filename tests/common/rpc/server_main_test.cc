#include "common/rpc/server_main.h"

#include "gtest/gtest.h"

namespace microrl::rpc {
namespace {

TEST(ValidateServerMainOptionsTest, AcceptsDefaultsAndEphemeralPorts) {
  ServerMainOptions options;
  EXPECT_TRUE(ValidateServerMainOptions(options).ok());
  options.port = 50051;
  options.metrics_port = 9401;
  EXPECT_TRUE(ValidateServerMainOptions(options).ok());
}

TEST(ValidateServerMainOptionsTest, NamesTheOffendingFlag) {
  ServerMainOptions options;
  options.port = 70000;
  EXPECT_EQ(ValidateServerMainOptions(options).message(),
            "--port=70000: must be in [0, 65535] (0 picks a free port)");

  options = {};
  options.metrics_port = -5;
  EXPECT_EQ(ValidateServerMainOptions(options).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateServerMainOptions(options).message().substr(0, 16),
            "--metrics_port=-");

  options = {};
  options.port = options.metrics_port = 8080;
  EXPECT_EQ(ValidateServerMainOptions(options).message(),
            "--port and --metrics_port are both 8080: they must differ");

  options = {};
  options.host = "";
  EXPECT_EQ(ValidateServerMainOptions(options).message(),
            "--host: must not be empty");

  options = {};
  options.max_message_mb = 4096;
  EXPECT_EQ(ValidateServerMainOptions(options).message(),
            "--max_message_mb=4096: must be in [1, 2047]");
}

TEST(CheckNoPositionalArgumentsTest, RejectsStrayArguments) {
  char program[] = "prog";
  char stray[] = "port=1";
  EXPECT_TRUE(CheckNoPositionalArguments({program}).ok());
  const absl::Status status = CheckNoPositionalArguments({program, stray});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "unexpected argument 'port=1' (flags are --name=value)");
}

TEST(UsageErrorTest, PrintsComponentAndMessageAndReturnsTwo) {
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(UsageError("learner", absl::InvalidArgumentError("--x: bad")), 2);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "learner: --x: bad\n");
}

}  // namespace
}  // namespace microrl::rpc
