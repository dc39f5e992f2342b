#ifndef MICRORL_COMMON_RPC_SERVER_MAIN_H_
#define MICRORL_COMMON_RPC_SERVER_MAIN_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/metrics/metrics_server.h"
#include "common/rpc/process_identity.h"
#include "common/rpc/service_host.h"
#include "prometheus/registry.h"

namespace microrl::rpc {

// The part of a service binary's main() after flag parsing, shared by
// rollout_server, reward_service and learner.
struct ServerMainOptions {
  std::string host = "127.0.0.1";  // serves gRPC and /metrics on this address
  int port = 0;                    // gRPC port (0: a free port)
  int metrics_port = 0;            // Prometheus /metrics port (0: a free port)
  // Labels added to every metric served (a data-parallel rank's {"rank", r}).
  metrics::MetricLabels metrics_labels;
  int max_message_mb = 256;  // largest gRPC message, MiB
  // How long in-flight calls may run on after SIGTERM/SIGINT before they are
  // cancelled.
  absl::Duration shutdown_grace = absl::Seconds(1);
  // If set, written once serving ({"grpc_port", "metrics_port", "pid",
  // "component"}) and removed on a clean stop.
  std::string ready_file;
  // TLS and the shared token (ServerSecurityFromFlags); none by default.
  ServerSecurity security;
};

// Checks the options as flags: the message names the flag ("--port=70000: must
// be in [0, 65535]").
absl::Status ValidateServerMainOptions(const ServerMainOptions& options);

// Serves `services` and /metrics until SIGINT or SIGTERM, then stops: health
// turns NOT_SERVING, in-flight calls get options.shutdown_grace, `on_stop` runs
// (stop background work there), the metrics endpoint closes. A second signal
// during the stop exits at once with code 1. The caller must have called
// BlockTerminationSignals() before starting any thread. Returns the process
// exit code: 0 after a clean stop, 1 if serving could not start (the error is
// logged).
int RunServer(const ServerMainOptions& options,
              const std::vector<HostedService>& services,
              std::shared_ptr<prometheus::Registry> registry,
              ProcessIdentity& identity,
              const std::function<void()>& on_stop = {});

// For a main(): prints "<component>: <message>" to stderr and returns exit
// code 2.
int UsageError(const std::string& component, const absl::Status& status);

// For a main(): UsageError if absl::ParseCommandLine left positional arguments.
absl::Status CheckNoPositionalArguments(const std::vector<char*>& positional);

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_SERVER_MAIN_H_
