#include "common/model/ipc_message.h"

#include <cstdint>
#include <limits>

#include "gtest/gtest.h"

namespace microrl::model {
namespace {

// The receiver of a CUDA IPC adapter trusts neither the sender's offset nor its
// size: both must keep every byte read inside the mapped allocation. (The GPU
// side, a real handle with a tampered size, is in tests/bench/gpu.sh, section
// c.)
TEST(IpcAdapterTest, RangeMustLieInsideTheMappedAllocation) {
  EXPECT_TRUE(CheckIpcRange(0, 1024, 1024).ok());
  EXPECT_TRUE(CheckIpcRange(512, 512, 1024).ok());
  EXPECT_TRUE(CheckIpcRange(1023, 1, 1024).ok());
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const struct {
    int64_t offset, bytes, available;
  } bad[] = {
      {0, 1025, 1024},     // one byte past the end
      {512, 513, 1024},    // ends past it from an offset
      {1024, 1, 1024},     // starts at the end
      {2048, 1, 1024},     // starts past it
      {-1, 1, 1024},       // before the pointer
      {0, 0, 1024},        // nothing
      {0, -5, 1024},       // negative size
      {kMax, kMax, kMax},  // would overflow offset + bytes
      {1, kMax, kMax},     // likewise
      {0, 1, -1},          // a broken allocation size
  };
  for (const auto& b : bad) {
    const absl::Status status = CheckIpcRange(b.offset, b.bytes, b.available);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
        << b.offset << " " << b.bytes << " " << b.available;
    EXPECT_NE(status.message().find("do not lie inside"), std::string::npos);
  }
}

}  // namespace
}  // namespace microrl::model
