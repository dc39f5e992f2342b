#include "common/base/memory.h"

#include <cstdlib>
#include <cstring>
#include <thread>

#include "gtest/gtest.h"

// What these tests read (mallinfo2) is glibc's, from 2.33 on, and means
// nothing under AddressSanitizer's allocator.
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && \
    (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
#include <malloc.h>

namespace microrl {
namespace {

constexpr size_t kBlock = size_t{200} << 20;  // over glibc's mmap thresholds

// Allocates, touches and frees a kBlock on a new thread (as the learner's
// training thread allocates an update's tensors); returns the bytes the heap
// (not mmap) held, and the mmap'd bytes, while the block was live.
struct Usage {
  size_t heap = 0;
  size_t mapped = 0;
};
Usage BlockOnAThread() {
  Usage usage;
  std::thread([&] {
    void* block = std::malloc(kBlock);
    ASSERT_NE(block, nullptr);
    std::memset(block, 1, kBlock);
    const struct mallinfo2 info = mallinfo2();
    usage.heap = info.arena;
    usage.mapped = info.hblkhd;
    std::free(block);
  }).join();
  return usage;
}

// Each case in a fresh process: KeepFreedMemory changes the C library for
// good, and must come before any other thread has made an arena of its own.
class KeepFreedMemoryTest : public testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// The checks of one case, in its own process: exits 0 when all hold, else
// with the number of the first that failed.
#define CHECK_OR_EXIT(condition, code) \
  if (!(condition)) std::_Exit(code)

TEST_F(KeepFreedMemoryTest, LargeBlocksComeFromOneReusedHeap) {
  EXPECT_EXIT(
      {
        setenv("MICRORL_KEEP_FREED_MEMORY", "1", 1);
        CHECK_OR_EXIT(KeepFreedMemory(), 2);
        const Usage first = BlockOnAThread();
        // Not mapped on its own (glibc's default for a block this size) but
        // carved out of the shared heap...
        CHECK_OR_EXIT(first.mapped < kBlock, 3);
        CHECK_OR_EXIT(first.heap >= kBlock, 4);
        // ...which keeps it once freed, and hands the same memory out again.
        CHECK_OR_EXIT(mallinfo2().arena >= kBlock, 5);
        const Usage second = BlockOnAThread();
        CHECK_OR_EXIT(second.heap == first.heap, 6);
        CHECK_OR_EXIT(second.mapped < kBlock, 7);
        std::_Exit(0);
      },
      testing::ExitedWithCode(0), "");
}

TEST_F(KeepFreedMemoryTest, EnvironmentTurnsItOff) {
  EXPECT_EXIT(
      {
        unsetenv("MICRORL_KEEP_FREED_MEMORY");  // off unless asked for
        CHECK_OR_EXIT(!KeepFreedMemory(), 2);
        // Untouched: glibc still maps a block this size on its own.
        CHECK_OR_EXIT(BlockOnAThread().mapped >= kBlock, 3);
        std::_Exit(0);
      },
      testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace microrl

#endif  // glibc >= 2.33, no AddressSanitizer
