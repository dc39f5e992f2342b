#include "common/base/passing_thread.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
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

// In a child process (a death test): an address-space limit just above what
// the process maps leaves no room for a thread's stack (8 MiB), so no thread
// starts. Exits 0 if the work ran on the caller and returned its value, else
// the number of the expectation that failed.
void RunsOnTheCallerWithoutThreads() {
  long pages = 0;
  FILE* statm = std::fopen("/proc/self/statm", "r");
  if (statm == nullptr || std::fscanf(statm, "%ld", &pages) != 1) _exit(1);
  std::fclose(statm);
  const rlim_t mapped = static_cast<rlim_t>(pages) * sysconf(_SC_PAGESIZE);
  const rlimit limit = {mapped + (2 << 20), mapped + (2 << 20)};
  if (setrlimit(RLIMIT_AS, &limit) != 0) _exit(2);
  try {
    std::thread([] {}).join();
    _exit(3);  // a thread started: the limit did not take
  } catch (const std::system_error&) {
  }
  const std::thread::id caller = std::this_thread::get_id();
  std::thread::id ran_on;
  const int value = RunOnPassingThread([&] {
    ran_on = std::this_thread::get_id();
    return 7;
  });
  if (value != 7 || ran_on != caller) _exit(4);
  int counter = 0;
  RunOnPassingThread([&] { ++counter; });
  if (counter != 1) _exit(5);
  try {
    RunOnPassingThread([] { throw std::out_of_range("here"); });
    _exit(6);
  } catch (const std::out_of_range&) {
  }
  _exit(0);
}

TEST(RunOnPassingThreadDeathTest, RunsOnTheCallerWhenNoThreadStarts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(RunsOnTheCallerWithoutThreads(), testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace microrl
