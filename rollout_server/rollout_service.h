#ifndef MICRORL_ROLLOUT_SERVER_ROLLOUT_SERVICE_H_
#define MICRORL_ROLLOUT_SERVER_ROLLOUT_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/device/device.h"
#include "common/rpc/process_identity.h"
#include "proto/rollout.grpc.pb.h"
#include "rollout_server/engine.h"

namespace microrl::rollout {

struct RolloutServiceOptions {
  // Device the model runs on.
  device::Device device;
  // Model directory ("" when the server runs without a model).
  std::string model_path;
  // Directory that LoadAdapter paths are relative to ("": paths refused).
  std::string adapter_dir;
  // Whether LoadAdapter accepts adapters by CUDA IPC handle (from loopback
  // peers only).
  bool cuda_ipc = true;
  // Whether loaded adapters are merged into a copy of the base weights
  // (Decoder::MergeAdapter) where the decoder suits it
  // (Decoder::MergesAdaptersForServing).
  bool merge_adapters = false;
};

// The microrl.v1.Rollout service over an Engine. Without an engine (no --model)
// GetInfo reports state NO_MODEL and the other methods FAILED_PRECONDITION.
// Handlers convert and validate, then wait on the engine; they never run model
// code. Thread-safe.
class RolloutService final : public v1::Rollout::Service {
 public:
  RolloutService(const RolloutServiceOptions& options,
                 std::shared_ptr<Engine> engine,
                 const rpc::ProcessIdentity& identity);

  grpc::Status Generate(grpc::ServerContext* context,
                        const v1::GenerateRequest* request,
                        v1::GenerateResponse* response) override;
  grpc::Status LoadAdapter(grpc::ServerContext* context,
                           grpc::ServerReader<v1::LoadAdapterRequest>* reader,
                           v1::LoadAdapterResponse* response) override;
  grpc::Status Sleep(grpc::ServerContext* context,
                     const v1::SleepRequest* request,
                     v1::SleepResponse* response) override;
  grpc::Status Wake(grpc::ServerContext* context,
                    const v1::WakeRequest* request,
                    v1::WakeResponse* response) override;
  grpc::Status GetInfo(grpc::ServerContext* context,
                       const v1::GetInfoRequest* request,
                       v1::RolloutInfo* response) override;

 private:
  grpc::Status NoModel() const;
  // The request as the engine takes it (text prompts tokenized); the token ids
  // of each prompt go to `prompt_ids` too.
  absl::StatusOr<GenerationRequest> ToEngineRequest(
      const v1::GenerateRequest& request) const;
  // Reads the LoadAdapter stream into an adapter on the model's device, and
  // sets the version, bytes, receive_seconds and load_seconds of `response`
  // and the header's keep_versions.
  absl::StatusOr<std::shared_ptr<const model::LoraAdapter>> ReadAdapter(
      grpc::ServerReader<v1::LoadAdapterRequest>* reader,
      const std::string& peer, v1::LoadAdapterResponse* response,
      int* keep_versions) const;

  const RolloutServiceOptions options_;
  const std::shared_ptr<Engine> engine_;
  // LoadAdapter streams being received (each may buffer up to 4 GiB): at most
  // kMaxAdapterUploads at once, more are refused with RESOURCE_EXHAUSTED.
  std::atomic<int> uploads_{0};
  const rpc::ProcessIdentity& identity_;
};

// Checks a LoadAdapter path: relative, no "..", no empty or "." components.
absl::Status CheckAdapterPath(const std::string& path);
// PermissionDenied if `path` under `root`, or the adapter files in it, resolve
// (through symbolic links) to somewhere outside `root`.
absl::Status CheckResolvesInside(const std::string& root,
                                 const std::string& path);

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_ROLLOUT_SERVICE_H_
