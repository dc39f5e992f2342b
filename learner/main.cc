// learner: trains LoRA adapters with GRPO against a rollout server and a reward
// service.
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/base/flag_usage.h"
#include "common/base/logging.h"
#include "common/base/net.h"
#include "common/base/signals.h"
#include "common/device/device.h"
#include "common/rpc/server_main.h"
#include "learner/learner_service.h"
#include "learner/peer_monitor.h"

ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address to serve gRPC and /metrics on.");
ABSL_FLAG(int, port, 50053, "gRPC port (0: pick a free port).");
ABSL_FLAG(int, metrics_port, 9403,
          "Prometheus /metrics port (0: pick a free port).");
ABSL_FLAG(
    std::string, ready_file, "",
    "Once serving, write {grpc_port, metrics_port, pid} as JSON to this file.");
ABSL_FLAG(int, max_message_mb, 256,
          "Largest gRPC message accepted or sent, MiB.");
ABSL_FLAG(std::string, device, "cpu",
          "Device to train on: cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, rollout_address, "127.0.0.1:50051",
          "host:port of the rollout server (empty: none).");
ABSL_FLAG(std::string, reward_address, "127.0.0.1:50052",
          "host:port of the reward service (empty: none).");
ABSL_FLAG(int, peer_probe_interval_ms, 2000,
          "How often to probe the peers' health, ms.");

namespace {

absl::Status ValidatePeerAddress(const std::string& flag,
                                 const std::string& address) {
  if (address.empty()) return absl::OkStatus();
  absl::StatusOr<microrl::HostPort> parsed = microrl::ParseHostPort(address);
  if (!parsed.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", parsed.status().message()));
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  constexpr char kComponent[] = "learner";
  microrl::BlockTerminationSignals();
  microrl::SetLogComponent(kComponent);
  microrl::SetUpFlagUsage(
      "Trains LoRA adapters with GRPO against a rollout server and a reward "
      "service.");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);

  microrl::rpc::ServerMainOptions server;
  server.host = absl::GetFlag(FLAGS_host);
  server.port = absl::GetFlag(FLAGS_port);
  server.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  server.max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  server.ready_file = absl::GetFlag(FLAGS_ready_file);
  const std::string rollout_address = absl::GetFlag(FLAGS_rollout_address);
  const std::string reward_address = absl::GetFlag(FLAGS_reward_address);
  const int probe_ms = absl::GetFlag(FLAGS_peer_probe_interval_ms);
  for (const absl::Status& status :
       {microrl::rpc::CheckNoPositionalArguments(positional),
        microrl::rpc::ValidateServerMainOptions(server),
        ValidatePeerAddress("rollout_address", rollout_address),
        ValidatePeerAddress("reward_address", reward_address),
        probe_ms >= 100 ? absl::OkStatus()
                        : absl::InvalidArgumentError(
                              "--peer_probe_interval_ms: must be >= 100")}) {
    if (!status.ok()) return microrl::rpc::UsageError(kComponent, status);
  }
  absl::StatusOr<microrl::device::Device> device =
      microrl::device::ResolveDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    return microrl::rpc::UsageError(
        kComponent, absl::InvalidArgumentError(
                        absl::StrCat("--device: ", device.status().message())));
  }

  auto registry = std::make_shared<prometheus::Registry>();
  microrl::rpc::ProcessIdentity identity(kComponent);
  microrl::learner::PeerMonitor peers(
      {{"rollout", rollout_address, "microrl.v1.Rollout"},
       {"reward", reward_address, "microrl.v1.Reward"}},
      absl::Milliseconds(probe_ms),
      /*timeout=*/absl::Milliseconds(500), *registry);
  microrl::learner::LearnerService service({*device}, identity, peers);
  microrl::ExitWithoutStaticDestructors(
      microrl::rpc::RunServer(server, {{&service, "microrl.v1.Learner"}},
                              registry, identity, [&peers] { peers.Stop(); }));
}
