// reward_service: scores completions for format and answer correctness over
// gRPC.
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/base/flag_usage.h"
#include "common/base/logging.h"
#include "common/base/signals.h"
#include "common/rpc/server_main.h"
#include "reward_service/reward_service.h"

ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address to serve gRPC and /metrics on.");
ABSL_FLAG(int, port, 50052, "gRPC port (0: pick a free port).");
ABSL_FLAG(int, metrics_port, 9402,
          "Prometheus /metrics port (0: pick a free port).");
ABSL_FLAG(
    std::string, ready_file, "",
    "Once serving, write {grpc_port, metrics_port, pid} as JSON to this file.");
ABSL_FLAG(int, max_message_mb, 256,
          "Largest gRPC message accepted or sent, MiB.");
ABSL_FLAG(int, item_deadline_ms, 5000,
          "Default time limit per scored item, ms.");
ABSL_FLAG(int, max_batch_items, 8192, "Largest Score batch accepted, items.");

namespace {

absl::Status ValidateRewardFlags() {
  if (absl::GetFlag(FLAGS_item_deadline_ms) <= 0) {
    return absl::InvalidArgumentError("--item_deadline_ms: must be positive");
  }
  const int max_batch = absl::GetFlag(FLAGS_max_batch_items);
  if (max_batch < 1 || max_batch > (1 << 20)) {
    return absl::InvalidArgumentError(
        "--max_batch_items: must be in [1, 1048576]");
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  constexpr char kComponent[] = "reward_service";
  microrl::BlockTerminationSignals();
  microrl::SetLogComponent(kComponent);
  microrl::SetUpFlagUsage(
      "Scores completions for format and answer correctness.");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);

  microrl::rpc::ServerMainOptions server;
  server.host = absl::GetFlag(FLAGS_host);
  server.port = absl::GetFlag(FLAGS_port);
  server.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  server.max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  server.ready_file = absl::GetFlag(FLAGS_ready_file);
  for (const absl::Status& status :
       {microrl::rpc::CheckNoPositionalArguments(positional),
        microrl::rpc::ValidateServerMainOptions(server),
        ValidateRewardFlags()}) {
    if (!status.ok()) return microrl::rpc::UsageError(kComponent, status);
  }

  microrl::reward::RewardServiceOptions options;
  options.item_deadline =
      absl::Milliseconds(absl::GetFlag(FLAGS_item_deadline_ms));
  options.max_batch_items = absl::GetFlag(FLAGS_max_batch_items);
  auto registry = std::make_shared<prometheus::Registry>();
  microrl::rpc::ProcessIdentity identity(kComponent);
  microrl::reward::RewardService service(options, identity);
  microrl::ExitWithoutStaticDestructors(microrl::rpc::RunServer(
      server, {{&service, "microrl.v1.Reward"}}, registry, identity));
}
