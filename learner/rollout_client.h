#ifndef MICRORL_LEARNER_ROLLOUT_CLIENT_H_
#define MICRORL_LEARNER_ROLLOUT_CLIENT_H_

#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model/ipc_message.h"
#include "common/rpc/retry.h"
#include "common/rpc/security.h"
#include "learner/generation.h"
#include "proto/rollout.grpc.pb.h"

namespace microrl::learner {

struct RolloutClientOptions {
  absl::Duration generate_timeout = absl::Hours(1);
  absl::Duration control_timeout =
      absl::Minutes(5);  // LoadAdapter, Sleep, Wake, GetInfo
  rpc::RetryPolicy retry;
  rpc::ClientSecurity security;  // TLS and token, if the server wants them
};

// The learner's client of a rollout server: every call has a deadline and is
// retried on UNAVAILABLE with backoff; errors carry the server's status and
// say which call failed. A peer that shuts down gracefully (CANCELLED) is
// retried like one that is down. Thread-safe; Cancel() (for a learner that is
// stopping) aborts every call in flight and every wait between retries at
// once, with CANCELLED, and refuses later calls but WakeOnce.
class RolloutClient : public CompletionSource {
 public:
  static absl::StatusOr<std::unique_ptr<RolloutClient>> Create(
      const std::string& address, const RolloutClientOptions& options);

  // One group of completions per prompt, in the prompts' order.
  absl::StatusOr<std::vector<CompletionGroup>> Generate(
      const std::vector<PromptIds>& prompts,
      const GenerateParams& params) override;
  // Streams a PEFT adapter (adapter_config.json text and
  // adapter_model.safetensors bytes) in 4 MiB chunks, hashed as they go and
  // followed by their SHA-256, as `version`; the server keeps the newest
  // `keep_versions` resident (AdapterHeader.keep_versions).
  absl::StatusOr<v1::LoadAdapterResponse> LoadAdapter(
      uint64_t version, const std::string& config_json,
      const std::string& safetensors, uint32_t keep_versions = 0);
  // Hands over an adapter by CUDA IPC handle (no bytes streamed): the server
  // copies the weights from this process's GPU memory. UNIMPLEMENTED when the
  // server cannot open them.
  absl::StatusOr<v1::LoadAdapterResponse> LoadAdapterIpc(
      uint64_t version, const std::string& config_json,
      const model::IpcAdapter& ipc, uint32_t keep_versions = 0);
  absl::StatusOr<v1::SleepResponse> Sleep(bool abort_running);
  absl::StatusOr<v1::WakeResponse> Wake();
  absl::StatusOr<v1::RolloutInfo> GetInfo();
  // Wakes a server that is asleep (a colocated run left it so); OK if awake.
  absl::Status WakeIfAsleep();

  // One Wake attempt with `timeout`, not retried, allowed after Cancel(): a
  // stopping learner leaves a colocated rollout server awake if it can.
  absl::Status WakeOnce(absl::Duration timeout);

  void Cancel();

 private:
  RolloutClient(std::string address, std::unique_ptr<v1::Rollout::Stub> stub,
                const RolloutClientOptions& options)
      : address_(std::move(address)),
        stub_(std::move(stub)),
        options_(options) {}

  // One LoadAdapter stream, `write` sending its messages; a retry that finds
  // `version` already loaded (its reply was lost) counts as done.
  absl::StatusOr<v1::LoadAdapterResponse> SendAdapter(
      uint64_t version,
      const std::function<void(grpc::ClientWriter<v1::LoadAdapterRequest>&)>&
          write);

  // Runs `call` with a fresh context per attempt, each registered for
  // Cancel().
  absl::Status Call(
      const std::string& what, absl::Duration timeout,
      const std::function<grpc::Status(grpc::ClientContext*)>& call);

  // A control call (Sleep, Wake, GetInfo): `method` of the stub through Call,
  // under control_timeout; its reply.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Control(
      const std::string& what,
      grpc::Status (v1::Rollout::Stub::*method)(grpc::ClientContext*,
                                                const Request&, Response*),
      const Request& request);

  const std::string address_;
  std::unique_ptr<v1::Rollout::Stub> stub_;
  const RolloutClientOptions options_;
  std::mutex mu_;
  std::set<grpc::ClientContext*> in_flight_;  // calls under way
  bool cancelled_ = false;                    // guarded by mu_
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_ROLLOUT_CLIENT_H_
