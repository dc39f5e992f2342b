#include "common/device/device.h"

#include <ATen/ops/empty.h>

#include <exception>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl::device {
namespace {

using ::testing::HasSubstr;

// Whether a `bytes` tensor fits on cuda:0 (the allocator throws when not).
bool AllocateOnGpu(uint64_t bytes) {
  try {
    const at::Tensor t =
        at::empty({static_cast<int64_t>(bytes)},
                  at::TensorOptions().dtype(at::kByte).device(at::kCUDA, 0));
    return t.numel() > 0;
  } catch (const std::exception&) {
    return false;
  }
}

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

TEST(CapMemoryTest, NeedsACudaDeviceAndAPositiveCap) {
  const absl::Status cpu = CapMemory(Device{}, 1 << 30);
  EXPECT_EQ(cpu.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(cpu.message()), HasSubstr("needs a CUDA device"));
  if (CudaDeviceCount() == 0) return;
  const Device gpu{true, 0};
  EXPECT_EQ(CapMemory(gpu, 0).code(), absl::StatusCode::kInvalidArgument);
  const MemoryInfo before = QueryMemory(gpu);
  EXPECT_EQ(CapMemory(gpu, before.total_bytes + 1).code(),
            absl::StatusCode::kInvalidArgument);
  // Under a 1 GiB cap a 2 GiB tensor fails although the GPU has room.
  ASSERT_TRUE(CapMemory(gpu, uint64_t{1} << 30).ok());
  EXPECT_NEAR(static_cast<double>(QueryMemory(gpu).cap_bytes),
              static_cast<double>(uint64_t{1} << 30), 1 << 20);
  EXPECT_FALSE(AllocateOnGpu(uint64_t{2} << 30));
  EXPECT_TRUE(AllocateOnGpu(uint64_t{256} << 20));
  ASSERT_TRUE(CapMemory(gpu, before.total_bytes).ok());
  ResetPeakMemory(gpu);
  EXPECT_TRUE(AllocateOnGpu(uint64_t{2} << 30));
  EXPECT_GE(QueryMemory(gpu).peak_allocated_bytes, uint64_t{2} << 30);
}

TEST(TorchVersionTest, IsTheVersionDeployPins) {
  EXPECT_EQ(TorchVersion(), MICRORL_PINNED_TORCH);
}

}  // namespace
}  // namespace microrl::device
