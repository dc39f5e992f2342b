#include "common/base/thread_pool.h"

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace microrl {
namespace {

TEST(ThreadPoolTest, ParallelForCallsEveryIndexOnce) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> calls(1000);
  pool.ParallelFor(calls.size(), [&](size_t i) { calls[i].fetch_add(1); });
  for (const auto& c : calls) EXPECT_EQ(c.load(), 1);
  pool.ParallelFor(0, [](size_t) { FAIL() << "no index"; });
}

TEST(ThreadPoolTest, OneThreadRunsPostedJobsInOrderOffTheCaller) {
  ThreadPool pool(1);
  std::mutex mu;
  std::vector<int> order;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> off_caller{true};
  // The first job blocks: Post returns before any job has run.
  pool.Post([&, released] {
    released.wait();
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(0);
  });
  for (int i = 1; i <= 20; ++i) {
    pool.Post([&, i] {
      if (std::this_thread::get_id() == caller) off_caller = false;
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(i);
    });
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(order.empty());
  }
  release.set_value();
  std::promise<void> last;
  pool.Post([&] { last.set_value(); });
  ASSERT_EQ(last.get_future().wait_for(std::chrono::seconds(10)),
            std::future_status::ready);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(order.size(), 21u);
  for (int i = 0; i <= 20; ++i) EXPECT_EQ(order[i], i);
  EXPECT_TRUE(off_caller.load());
}

TEST(ThreadPoolTest, DestructionRunsTheJobsStillQueued) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(1);
    for (int i = 0; i < 10; ++i) {
      pool.Post([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        ran.fetch_add(1);
      });
    }
  }
  EXPECT_EQ(ran.load(), 10);
}

}  // namespace
}  // namespace microrl
