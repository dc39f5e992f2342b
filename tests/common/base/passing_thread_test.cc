#include "common/base/passing_thread.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace microrl {
namespace {

TEST(RunOnPassingThreadTest, ReturnsWhatTheWorkReturns) {
  const std::thread::id caller = std::this_thread::get_id();
  std::thread::id ran_on;
  const std::unique_ptr<std::string> result = RunOnPassingThread([&] {
    ran_on = std::this_thread::get_id();
    return std::make_unique<std::string>("done");  // move-only is fine
  });
  ASSERT_NE(result, nullptr);
  EXPECT_EQ(*result, "done");
  EXPECT_NE(ran_on, caller);
}

TEST(RunOnPassingThreadTest, RunsVoidWorkToTheEnd) {
  int counter = 0;
  RunOnPassingThread([&] { counter += 41; });
  RunOnPassingThread([&] { ++counter; });
  EXPECT_EQ(counter, 42);
}

TEST(RunOnPassingThreadTest, RethrowsOnTheCaller) {
  EXPECT_THROW(RunOnPassingThread([]() -> int {
                 throw std::runtime_error("from the passing thread");
               }),
               std::runtime_error);
  EXPECT_THROW(RunOnPassingThread([] { throw std::out_of_range("void"); }),
               std::out_of_range);
}

}  // namespace
}  // namespace microrl
