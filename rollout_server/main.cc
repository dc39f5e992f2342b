// rollout_server: samples groups of completions from the base model plus the
// current LoRA adapter, on one GPU (or the CPU), over gRPC.
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/base/flag_usage.h"
#include "common/base/logging.h"
#include "common/base/signals.h"
#include "common/device/device.h"
#include "common/rpc/server_main.h"
#include "rollout_server/rollout_service.h"

ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address to serve gRPC and /metrics on.");
ABSL_FLAG(int, port, 50051, "gRPC port (0: pick a free port).");
ABSL_FLAG(int, metrics_port, 9401,
          "Prometheus /metrics port (0: pick a free port).");
ABSL_FLAG(
    std::string, ready_file, "",
    "Once serving, write {grpc_port, metrics_port, pid} as JSON to this file.");
ABSL_FLAG(int, max_message_mb, 256,
          "Largest gRPC message accepted or sent, MiB.");
ABSL_FLAG(std::string, device, "cpu",
          "Device to run the model on: cpu, cuda or cuda:N.");

int main(int argc, char** argv) {
  constexpr char kComponent[] = "rollout_server";
  microrl::BlockTerminationSignals();
  microrl::SetLogComponent(kComponent);
  microrl::SetUpFlagUsage(
      "Samples groups of completions from a base model plus LoRA adapter.");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);

  microrl::rpc::ServerMainOptions server;
  server.host = absl::GetFlag(FLAGS_host);
  server.port = absl::GetFlag(FLAGS_port);
  server.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  server.max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  server.ready_file = absl::GetFlag(FLAGS_ready_file);
  for (const absl::Status& status :
       {microrl::rpc::CheckNoPositionalArguments(positional),
        microrl::rpc::ValidateServerMainOptions(server)}) {
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
  microrl::rollout::RolloutService service({*device}, identity);
  microrl::ExitWithoutStaticDestructors(microrl::rpc::RunServer(
      server, {{&service, "microrl.v1.Rollout"}}, registry, identity));
}
