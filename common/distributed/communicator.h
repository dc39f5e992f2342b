#ifndef MICRORL_COMMON_DISTRIBUTED_COMMUNICATOR_H_
#define MICRORL_COMMON_DISTRIBUTED_COMMUNICATOR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/distributed/launch.h"

namespace microrl::distributed {

enum class ReduceOp { kSum, kMax };

struct CommunicatorOptions {
  // Every collective, the rendezvous included, fails after this long without
  // its peers (a dead or stuck rank).
  absl::Duration timeout = absl::Minutes(10);
  // The tensors' device: CUDA uses NCCL (device index = the rank's GPU), the
  // CPU Gloo.
  bool cuda = false;
  int cuda_device = 0;
  // All-reduces flatten consecutive tensors of one dtype into buckets of about
  // this many bytes (one collective each).
  int64_t bucket_bytes = 64 << 20;
};

// Collectives among the ranks of a job, on torch.distributed's c10d: a
// TCPStore rendezvous (hosted by rank 0, or by torchrun's agent), then
// ProcessGroupNCCL on CUDA or ProcessGroupGloo on the CPU. This file's .cc is
// the only translation unit that includes c10d's headers.
//
// Every rank must call the same collectives in the same order. A collective
// that fails (a peer died, the timeout passed) returns an error naming the
// operation and this rank; the communicator is then unusable (the job must
// restart). Not thread-safe: one thread issues the collectives.
class Communicator {
 public:
  // Joins the job `launch` describes and runs SelfTest(). Fails, naming the
  // store's address, when the rendezvous does not complete within the timeout.
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(
      const LaunchEnv& launch, const CommunicatorOptions& options);
  ~Communicator();

  int rank() const { return launch_.rank; }
  int world_size() const { return launch_.world_size; }
  const LaunchEnv& launch() const { return launch_; }
  // "gloo" or "nccl".
  const char* backend() const;
  // A collective failed: the communicator must not be used again (its peers
  // may be gone or out of step).
  bool failed() const { return failed_; }
  // Where the collectives' tensors must be: the rank's GPU (NCCL) or the CPU.
  at::Device device() const;

  // Reduces `tensors` (contiguous, on the communicator's device) in place
  // across the ranks: afterwards every rank holds the same values (for a sum,
  // the element-wise sum over ranks).
  absl::Status AllReduce(absl::Span<const at::Tensor> tensors,
                         ReduceOp op = ReduceOp::kSum);
  // Overwrites `tensors` on every rank with rank `root`'s.
  absl::Status Broadcast(absl::Span<const at::Tensor> tensors, int root);
  // Returns when every rank has called it; `timeout` replaces the
  // communicator's for this call (a rank that waits for another's long task).
  absl::Status Barrier(std::optional<absl::Duration> timeout = std::nullopt);

  // An all-reduce and a broadcast with known results (integers and floats);
  // fails loudly if a value differs, which would mean the collective library
  // and its headers do not agree.
  absl::Status SelfTest();

 private:
  struct Impl;
  Communicator(const LaunchEnv& launch, const CommunicatorOptions& options,
               std::unique_ptr<Impl> impl);

  const LaunchEnv launch_;
  const CommunicatorOptions options_;
  std::unique_ptr<Impl> impl_;
  bool failed_ = false;
};

}  // namespace microrl::distributed

#endif  // MICRORL_COMMON_DISTRIBUTED_COMMUNICATOR_H_
