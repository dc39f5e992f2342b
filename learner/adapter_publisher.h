#ifndef MICRORL_LEARNER_ADAPTER_PUBLISHER_H_
#define MICRORL_LEARNER_ADAPTER_PUBLISHER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/model/lora.h"
#include "learner/config.h"
#include "learner/rollout_client.h"

namespace microrl::learner {

struct PublishOptions {
  std::string model_path;  // base_model_name_or_path in adapter_config.json
  // kAuto: CUDA IPC when the learner is on a GPU and the rollout server is on
  // this host and takes it, else gRPC.
  PublishVia via = PublishVia::kAuto;
  // Of the weights sent (kAuto: bfloat16 when the model is).
  PublishDtype dtype = PublishDtype::kAuto;
  std::string rollout_address;
  // Adapter versions the rollout server keeps resident (this one included):
  // rollout.max_staleness + 1.
  uint32_t keep_versions = 1;
};

// Hands a training adapter to the rollout server: by CUDA IPC handle from a
// packed staging copy on the GPU, or streamed over gRPC. In "auto" it finds
// out once whether the server takes IPC, and falls back to gRPC for good when
// it does not (or for one publish when the staging copy does not fit).
class AdapterPublisher {
 public:
  AdapterPublisher(RolloutClient& rollout, const model::LoraAdapter& adapter,
                   at::ScalarType model_dtype, bool model_on_cuda,
                   PublishOptions options);

  // Loads the adapter as version `*version + 1`, or above a higher version
  // another client (a `learner eval --adapter`, a second learner) loaded
  // meanwhile; `*version` becomes the version served (on failure, the highest
  // version known to be taken).
  absl::Status Publish(uint64_t* version);

  // Loads the adapter as exactly `version`.
  absl::Status PublishVersion(uint64_t version);

  // The server restarted: whether it takes CUDA IPC is asked again.
  void Reset();

 private:
  RolloutClient& rollout_;
  const model::LoraAdapter& adapter_;
  const at::ScalarType model_dtype_;
  const bool model_on_cuda_;
  const PublishOptions options_;
  // The packed weights the rollout server copies from (IPC).
  at::Tensor staging_;
  bool ipc_unavailable_ = false;
  bool ipc_checked_ = false;  // the server's accepts_cuda_ipc was read
};

// Loads the adapter into several rollout servers as one version: `first`
// picks it (as Publish), then `others` load exactly it, concurrently. One of
// `others` that cannot be reached is skipped (logged): it refuses requests
// until it has the adapter again.
absl::Status PublishToAll(
    AdapterPublisher& first,
    const std::vector<std::unique_ptr<AdapterPublisher>>& others,
    uint64_t* version);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_ADAPTER_PUBLISHER_H_
