#include "common/device/device.h"

#include <ATen/DeviceAccelerator.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <ATen/ops/empty.h>
#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/version.h>

#include <algorithm>
#include <exception>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace microrl::device {
namespace {

bool CudaIsTheAccelerator() {
  const std::optional<c10::DeviceType> accelerator = at::getAccelerator(false);
  return accelerator.has_value() && *accelerator == c10::DeviceType::CUDA;
}

}  // namespace

std::string Device::ToString() const {
  return cuda ? absl::StrCat("cuda:", index) : "cpu";
}

int CudaDeviceCount() {
  try {
    if (!CudaIsTheAccelerator()) return 0;
    return at::accelerator::deviceCount();
  } catch (const std::exception&) {
    return 0;
  }
}

absl::StatusOr<Device> ResolveDevice(absl::string_view spec) {
  if (spec == "cpu") return Device{};
  int index = 0;
  if (spec != "cuda") {
    absl::string_view number = spec;
    const bool well_formed =
        absl::ConsumePrefix(&number, "cuda:") && !number.empty() &&
        std::all_of(number.begin(), number.end(), absl::ascii_isdigit) &&
        absl::SimpleAtoi(number, &index);
    if (!well_formed) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown device \"", spec, "\" (want cpu, cuda or cuda:N)"));
    }
  }
  const int count = CudaDeviceCount();
  if (count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", spec,
                     " requested but no CUDA GPU is visible to this process"));
  }
  if (index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", spec, " requested but only ", count,
                     " CUDA GPU(s) are visible"));
  }
  return Device{true, index};
}

MemoryInfo QueryMemory(const Device& device) {
  MemoryInfo info;
  if (!device.cuda) return info;
  const auto index = static_cast<c10::DeviceIndex>(device.index);
  try {
    // The driver's figures, readable before anything is allocated.
    const auto [free_bytes, total_bytes] =
        at::accelerator::getMemoryInfo(index);
    info.free_bytes = free_bytes;
    info.total_bytes = total_bytes;
  } catch (const std::exception&) {
    // A device that cannot report reads as zeros; callers treat zeros as
    // unknown.
  }
  try {
    // The caching allocator's figures. It is set up on the first allocation
    // and throws before it: nothing is allocated then, and zeros are right.
    const auto stats = at::accelerator::getDeviceStats(index);
    constexpr auto kAggregate =
        static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    info.allocated_bytes =
        static_cast<uint64_t>(stats.allocated_bytes[kAggregate].current);
    info.reserved_bytes =
        static_cast<uint64_t>(stats.reserved_bytes[kAggregate].current);
    info.peak_allocated_bytes =
        static_cast<uint64_t>(stats.allocated_bytes[kAggregate].peak);
    info.peak_reserved_bytes =
        static_cast<uint64_t>(stats.reserved_bytes[kAggregate].peak);
    const double fraction =
        c10::cuda::CUDACachingAllocator::getMemoryFraction(index);
    if (fraction > 0 && fraction < 1) {
      // The allocator applies the fraction to this total.
      info.cap_bytes = static_cast<uint64_t>(
          fraction * static_cast<double>(
                         at::cuda::getDeviceProperties(index)->totalGlobalMem));
    }
  } catch (const std::exception&) {
  }
  return info;
}

void ResetPeakMemory(const Device& device) {
  if (!device.cuda) return;
  try {
    at::accelerator::resetPeakStats(
        static_cast<c10::DeviceIndex>(device.index));
  } catch (const std::exception&) {
  }
}

absl::Status CapMemory(const Device& device, uint64_t bytes) {
  if (!device.cuda) {
    return absl::FailedPreconditionError(
        "a GPU memory cap needs a CUDA device (the device is cpu)");
  }
  if (bytes == 0) {
    return absl::InvalidArgumentError("a GPU memory cap must be above 0");
  }
  try {
    const auto index = static_cast<c10::DeviceIndex>(device.index);
    // The allocator is set up on the first CUDA allocation.
    (void)at::empty({1}, at::TensorOptions().device(at::kCUDA, index));
    // The allocator applies the fraction to this total (not the driver's
    // free/total figures).
    const uint64_t total_bytes =
        at::cuda::getDeviceProperties(index)->totalGlobalMem;
    if (bytes > total_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("a GPU memory cap of ", bytes, " bytes exceeds ",
                       device.ToString(), "'s ", total_bytes, " bytes"));
    }
    c10::cuda::CUDACachingAllocator::setMemoryFraction(
        static_cast<double>(bytes) / static_cast<double>(total_bytes), index);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot cap the memory of ",
                                            device.ToString(), ": ", e.what()));
  }
  return absl::OkStatus();
}

void ReleaseCachedMemory(const Device& device) {
  if (!device.cuda) return;
  try {
    at::accelerator::emptyCache();
  } catch (const std::exception&) {
  }
}

void Synchronize(const Device& device) {
  if (device.cuda)
    at::accelerator::synchronizeDevice(
        static_cast<c10::DeviceIndex>(device.index));
}

std::string TorchVersion() { return TORCH_VERSION; }

}  // namespace microrl::device
