#include "common/base/logging.h"

#include <regex>

#include "gtest/gtest.h"

namespace microrl {
namespace {

TEST(LoggingTest, WritesOneFormattedLinePerMessage) {
  SetLogComponent("unit");
  ::testing::internal::CaptureStderr();
  MRL_LOG(INFO) << "hello " << 42;
  MRL_LOG(WARNING) << "second";
  const std::string out = ::testing::internal::GetCapturedStderr();
  const std::regex line(
      R"(I\d{8} \d\d:\d\d:\d\d\.\d{6} unit logging_test\.cc:\d+\] hello 42\n)"
      R"(W\d{8} \d\d:\d\d:\d\d\.\d{6} unit logging_test\.cc:\d+\] second\n)");
  EXPECT_TRUE(std::regex_match(out, line)) << out;
}

TEST(LoggingDeathTest, FatalAborts) {
  EXPECT_DEATH(MRL_LOG(FATAL) << "boom", "boom");
}

}  // namespace
}  // namespace microrl
