#ifndef MICRORL_COMMON_RPC_SERVICE_HOST_H_
#define MICRORL_COMMON_RPC_SERVICE_HOST_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/limits.h"
#include "common/rpc/rpc_metrics.h"
#include "common/rpc/security.h"
#include "grpcpp/server.h"
#include "prometheus/registry.h"

namespace microrl::rpc {

struct ServiceHostOptions {
  // Address to listen on; port 0 picks a free port (see ServiceHost::port()).
  std::string host = "127.0.0.1";
  int port = 0;
  int max_message_bytes = kDefaultMaxMessageBytes;
  // TLS and the shared token (none by default).
  ServerSecurity security;
  // How long Shutdown lets in-flight calls finish before cancelling them.
  absl::Duration shutdown_grace = absl::Seconds(1);
  // Threads serving calls (gRPC's resource quota): a call that finds them all
  // busy is refused with RESOURCE_EXHAUSTED rather than starting a thread
  // more. And calls in flight on one connection (HTTP/2 streams); more wait
  // in the client.
  int max_threads = 64;
  int max_concurrent_streams = 32;
};

// A service to serve and its full name for health reporting
// ("microrl.v1.Reward").
struct HostedService {
  grpc::Service* service;  // not owned; must outlive the host
  std::string name;
};

// A running gRPC server with the standard health service and per-method
// Prometheus metrics. Health reports SERVING for "" and every hosted service
// until Shutdown. Thread-safe.
class ServiceHost {
 public:
  // Builds and starts the server. InvalidArgument without services or for bad
  // security settings; Unavailable if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<ServiceHost>> Start(
      const ServiceHostOptions& options,
      const std::vector<HostedService>& services,
      prometheus::Registry& registry);

  // Shutdown(), then waits for the server to stop.
  ~ServiceHost();

  ServiceHost(const ServiceHost&) = delete;
  ServiceHost& operator=(const ServiceHost&) = delete;

  // The port really bound.
  int port() const { return port_; }

  // Health turns NOT_SERVING, new calls are refused, in-flight calls get up to
  // options.shutdown_grace to finish and are then cancelled. Returns once the
  // server has stopped. Idempotent.
  void Shutdown();

 private:
  ServiceHost(ServiceHostOptions options, std::unique_ptr<RpcMetrics> metrics,
              std::unique_ptr<grpc::Server> server, int port);

  const ServiceHostOptions options_;
  // Referenced by the server's interceptors: destroyed after server_.
  const std::unique_ptr<RpcMetrics> metrics_;
  const std::unique_ptr<grpc::Server> server_;
  const int port_;

  std::mutex mu_;
  bool shut_down_ = false;  // guarded by mu_
};

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_SERVICE_HOST_H_
