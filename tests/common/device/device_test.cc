#include "common/device/device.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl::device {
namespace {

using ::testing::HasSubstr;

TEST(ResolveDeviceTest, CpuAlwaysResolves) {
  const absl::StatusOr<Device> cpu = ResolveDevice("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_FALSE(cpu->cuda);
  EXPECT_EQ(cpu->ToString(), "cpu");
}

TEST(ResolveDeviceTest, MalformedSpecsAreInvalidArgument) {
  for (const char* spec : {"", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1",
                           "cuda:1x", "cuda0", " cpu"}) {
    const absl::StatusOr<Device> device = ResolveDevice(spec);
    ASSERT_FALSE(device.ok()) << spec;
    EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument)
        << spec;
    EXPECT_THAT(std::string(device.status().message()),
                HasSubstr("want cpu, cuda or cuda:N"));
  }
}

TEST(ResolveDeviceTest, CudaResolvesExactlyWhenAGpuIsVisible) {
  const int count = CudaDeviceCount();
  const absl::StatusOr<Device> first = ResolveDevice("cuda");
  const absl::StatusOr<Device> beyond =
      ResolveDevice("cuda:" + std::to_string(count));
  EXPECT_EQ(beyond.status().code(), absl::StatusCode::kFailedPrecondition);
  if (count == 0) {
    EXPECT_EQ(first.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(first.status().message()),
                HasSubstr("no CUDA GPU is visible"));
  } else {
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->ToString(), "cuda:0");
    const MemoryInfo memory = QueryMemory(*first);
    EXPECT_GT(memory.total_bytes, 0u);
    EXPECT_GE(memory.reserved_bytes, memory.allocated_bytes);
  }
}

TEST(QueryMemoryTest, CpuReportsZeros) {
  const MemoryInfo memory = QueryMemory(Device{});
  EXPECT_EQ(memory.allocated_bytes, 0u);
  EXPECT_EQ(memory.total_bytes, 0u);
  ReleaseCachedMemory(Device{});  // a no-op that must not throw
}

TEST(TorchVersionTest, IsTheVersionDeployPins) {
  EXPECT_EQ(TorchVersion(), MICRORL_PINNED_TORCH);
}

}  // namespace
}  // namespace microrl::device
