#include "learner/adapter_publisher.h"

#include <ATen/ATen.h>

#include <thread>
#include <utility>

#include "common/base/logging.h"
#include "common/base/net.h"
#include "common/model/cuda_ipc.h"

namespace microrl::learner {

AdapterPublisher::AdapterPublisher(RolloutClient& rollout,
                                   const model::LoraAdapter& adapter,
                                   at::ScalarType model_dtype,
                                   bool model_on_cuda, PublishOptions options)
    : rollout_(rollout),
      adapter_(adapter),
      model_dtype_(model_dtype),
      model_on_cuda_(model_on_cuda),
      options_(std::move(options)) {}

void AdapterPublisher::Reset() {
  ipc_checked_ = false;
  ipc_unavailable_ = false;
}

absl::Status AdapterPublisher::Publish(uint64_t* version) {
  absl::Status published = PublishVersion(*version + 1);
  if (published.code() == absl::StatusCode::kFailedPrecondition) {
    // Another client loaded a version at least as high: ours goes above it.
    absl::StatusOr<v1::RolloutInfo> info = rollout_.GetInfo();
    if (info.ok() && info->adapter_version() > *version) {
      MRL_LOG(WARNING) << "the rollout server serves adapter version "
                       << info->adapter_version()
                       << ", loaded by another client; publishing as version "
                       << info->adapter_version() + 1;
      *version = info->adapter_version();
      published = PublishVersion(*version + 1);
    }
  }
  if (published.ok()) ++*version;
  return published;
}

absl::Status AdapterPublisher::PublishVersion(uint64_t version) {
  const at::ScalarType dtype = options_.dtype == PublishDtype::kBfloat16 ||
                                       (options_.dtype == PublishDtype::kAuto &&
                                        model_dtype_ == at::kBFloat16)
                                   ? at::kBFloat16
                                   : at::kFloat;
  const std::string config_json = adapter_.PeftConfigJson(options_.model_path);
  absl::StatusOr<v1::LoadAdapterResponse> loaded =
      absl::UnimplementedError("not sent");
  const absl::StatusOr<HostPort> rollout =
      ParseHostPort(options_.rollout_address);
  const bool automatic = options_.via == PublishVia::kAuto;
  bool ipc = options_.via == PublishVia::kCudaIpc ||
             (automatic && !ipc_unavailable_ && model_on_cuda_ &&
              rollout.ok() && IsLoopbackHost(rollout->host));
  auto give_up_ipc = [&](const absl::Status& why) {
    MRL_LOG(WARNING) << "CUDA IPC publishing is unavailable (" << why
                     << "): publishing over gRPC from now on";
    ipc_unavailable_ = true;
    staging_ = at::Tensor();
    ipc = false;
  };
  if (ipc && automatic && !ipc_checked_) {
    // A server that does not take IPC says so (it may be on the CPU, or not
    // know the field at all).
    absl::StatusOr<v1::RolloutInfo> info = rollout_.GetInfo();
    if (info.ok()) {
      ipc_checked_ = true;
      if (!info->accepts_cuda_ipc()) {
        give_up_ipc(absl::UnimplementedError(
            "the rollout server does not accept CUDA IPC adapters"));
      }
    }
  }
  bool stream = !ipc;
  if (ipc) {
    absl::StatusOr<model::IpcAdapter> shared =
        model::ExportAdapter(adapter_, dtype, staging_);
    if (shared.ok()) {
      loaded = rollout_.LoadAdapterIpc(version, config_json, *shared,
                                       options_.keep_versions);
      // The server cannot open it (CPU, another GPU or host, IPC off).
      if (automatic &&
          loaded.status().code() == absl::StatusCode::kUnimplemented) {
        give_up_ipc(loaded.status());
        stream = true;
      }
    } else if (automatic) {
      // E.g. no room for the packed copy under model.gpu_memory_gib: this
      // publish streams, the next tries IPC again.
      MRL_LOG(WARNING) << "CUDA IPC export failed (" << shared.status()
                       << "): publishing this adapter over gRPC";
      staging_ = at::Tensor();
      stream = true;
    } else {
      loaded = shared.status();
    }
  }
  if (stream) {
    absl::StatusOr<std::string> weights = adapter_.PeftSafetensors(dtype);
    if (!weights.ok()) return weights.status();
    loaded = rollout_.LoadAdapter(version, config_json, *weights,
                                  options_.keep_versions);
  }
  return loaded.status();
}

absl::Status PublishToAll(
    AdapterPublisher& first,
    const std::vector<std::unique_ptr<AdapterPublisher>>& others,
    uint64_t* version) {
  if (absl::Status s = first.Publish(version); !s.ok()) return s;
  std::vector<absl::Status> results(others.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < others.size(); ++i) {
    threads.emplace_back(
        [&, i] { results[i] = others[i]->PublishVersion(*version); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) {
    // A server that cannot be reached gets the adapter again when it is back
    // (it refuses to generate with an older one, and the learner republishes).
    if (s.code() == absl::StatusCode::kUnavailable ||
        s.code() == absl::StatusCode::kDeadlineExceeded) {
      MRL_LOG(WARNING) << "a rollout server missed adapter version " << *version
                       << ": " << s.message();
      continue;
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace microrl::learner
