#ifndef MICRORL_COMMON_DEVICE_DEVICE_H_
#define MICRORL_COMMON_DEVICE_DEVICE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// Device selection and memory queries through LibTorch. The header is
// torch-free so gRPC-side code can use it without torch's compile cost.
namespace microrl::device {

// A compute device: the CPU or one CUDA GPU.
struct Device {
  bool cuda = false;
  int index = 0;  // CUDA device index; 0 for the CPU

  // "cpu" or "cuda:N".
  std::string ToString() const;
};

// Parses "cpu", "cuda" (= "cuda:0") or "cuda:N" and checks it exists here:
// InvalidArgument for a malformed spec, FailedPrecondition when CUDA is asked
// for and no GPU (or not that many) is visible.
absl::StatusOr<Device> ResolveDevice(absl::string_view spec);

// Number of CUDA GPUs visible to this process (0 without a GPU or driver).
int CudaDeviceCount();

struct MemoryInfo {
  uint64_t allocated_bytes = 0;  // held by live tensors
  uint64_t reserved_bytes = 0;   // held by the caching allocator (>= allocated)
  uint64_t total_bytes = 0;      // device capacity
  uint64_t free_bytes =
      0;  // free on the device (all processes), per the driver
  // Highest allocated/reserved since the process started or ResetPeakMemory.
  uint64_t peak_allocated_bytes = 0;
  uint64_t peak_reserved_bytes = 0;
  // This process's cap (CapMemory), or 0 when none is set.
  uint64_t cap_bytes = 0;
};

// Memory of a CUDA device as the caching allocator and driver see it; all zeros
// for the CPU.
MemoryInfo QueryMemory(const Device& device);

// Starts the peak counters of QueryMemory afresh (no-op on the CPU).
void ResetPeakMemory(const Device& device);

// Caps what this process's caching allocator may reserve on a CUDA device at
// `bytes` (as torch.cuda.set_per_process_memory_fraction does): an allocation
// beyond it fails with an out-of-memory error even when the GPU has room, so
// several processes can share one GPU within a budget. Call before the large
// allocations. InvalidArgument for 0 or more than the device's capacity,
// FailedPrecondition on the CPU. The CUDA context itself (about 0.5 GiB per
// process) is outside the cap.
absl::Status CapMemory(const Device& device, uint64_t bytes);

// Returns the caching allocator's unused cached blocks to the driver (no-op on
// the CPU).
void ReleaseCachedMemory(const Device& device);

// Waits until all queued work on a CUDA device has finished (no-op on the CPU).
void Synchronize(const Device& device);

// LibTorch version, e.g. "2.11.0".
std::string TorchVersion();

}  // namespace microrl::device

#endif  // MICRORL_COMMON_DEVICE_DEVICE_H_
