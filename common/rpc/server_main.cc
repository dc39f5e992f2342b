#include "common/rpc/server_main.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/failpoint.h"
#include "common/base/logging.h"
#include "common/base/net.h"
#include "common/base/ready_file.h"
#include "common/base/signals.h"
#include "common/metrics/metrics_server.h"

namespace microrl::rpc {

absl::Status ValidateServerMainOptions(const ServerMainOptions& options) {
  if (options.host.empty())
    return absl::InvalidArgumentError("--host: must not be empty");
  if (absl::Status s = ValidatePort(options.port, "port", /*allow_zero=*/true);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidatePort(options.metrics_port, "metrics_port", true);
      !s.ok()) {
    return s;
  }
  if (options.port != 0 && options.port == options.metrics_port) {
    return absl::InvalidArgumentError(
        absl::StrCat("--port and --metrics_port are both ", options.port,
                     ": they must differ"));
  }
  if (absl::Status s = CheckRemoteAccess(options.host, options.security);
      !s.ok()) {
    return s;
  }
  if (const char* spec = std::getenv("MICRORL_FAILPOINTS"); spec != nullptr) {
    if (absl::Status s = CheckFailpointSpec(spec); !s.ok()) return s;
  }
  if (options.max_message_mb < 1 || options.max_message_mb > 2047) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_message_mb=", options.max_message_mb, ": must be in [1, 2047]"));
  }
  return absl::OkStatus();
}

int UsageError(const std::string& component, const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", component.c_str(),
               std::string(status.message()).c_str());
  return 2;
}

absl::Status CheckNoPositionalArguments(const std::vector<char*>& positional) {
  if (positional.size() <= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "unexpected argument '", positional[1], "' (flags are --name=value)"));
}

int RunServer(const ServerMainOptions& options,
              const std::vector<HostedService>& services,
              std::shared_ptr<prometheus::Registry> registry,
              ProcessIdentity& identity, const std::function<void()>& on_stop) {
  absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics_server =
      metrics::MetricsServer::Start(options.host, options.metrics_port,
                                    registry, identity.component(),
                                    options.metrics_labels);
  if (!metrics_server.ok()) {
    MRL_LOG(ERROR) << metrics_server.status().message();
    return 1;
  }
  identity.set_metrics_port((*metrics_server)->port());

  ServiceHostOptions host_options;
  host_options.host = options.host;
  host_options.port = options.port;
  host_options.max_message_bytes = options.max_message_mb << 20;
  host_options.shutdown_grace = options.shutdown_grace;
  host_options.security = options.security;
  absl::StatusOr<std::unique_ptr<ServiceHost>> host =
      ServiceHost::Start(host_options, services, *registry);
  if (!host.ok()) {
    MRL_LOG(ERROR) << host.status().message();
    return 1;
  }
  MRL_LOG(INFO) << "serving gRPC on "
                << JoinHostPort(options.host, (*host)->port())
                << ", metrics on http://"
                << JoinHostPort(options.host, (*metrics_server)->port())
                << "/metrics"
                << (options.security.tls_cert_file.empty()
                        ? ""
                        : (options.security.tls_client_ca_file.empty()
                               ? " (TLS)"
                               : " (mutual TLS)"))
                << (options.security.token.empty() ? "" : " (token required)");

  if (!options.ready_file.empty()) {
    const ReadyInfo ready{identity.component(), (*host)->port(),
                          (*metrics_server)->port(), getpid()};
    if (absl::Status s = WriteReadyFile(options.ready_file, ready); !s.ok()) {
      MRL_LOG(ERROR) << "--ready_file: " << s.message();
      return 1;
    }
  }

  const int sig = WaitForTerminationSignal();
  const absl::Time stop_start = absl::Now();
  if (IsTerminationRequest(sig)) {
    MRL_LOG(INFO) << "work done, stopping";
  } else {
    MRL_LOG(INFO) << "received " << strsignal(sig)
                  << ", stopping (a second signal exits at once)";
  }
  std::thread([] {
    int again = 0;
    do {
      again = WaitForTerminationSignal();
    } while (IsTerminationRequest(again));
    MRL_LOG(WARNING) << "received " << strsignal(again)
                     << " again: exiting without a clean stop";
    _exit(1);
  }).detach();
  (*host)->Shutdown();
  if (on_stop) on_stop();
  host->reset();
  metrics_server->reset();
  if (!options.ready_file.empty()) std::remove(options.ready_file.c_str());
  MRL_LOG(INFO) << "stopped in "
                << absl::FormatDuration(absl::Now() - stop_start);
  return 0;
}

}  // namespace microrl::rpc
