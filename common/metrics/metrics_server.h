#ifndef MICRORL_COMMON_METRICS_METRICS_SERVER_H_
#define MICRORL_COMMON_METRICS_METRICS_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/metrics/process_collector.h"
#include "prometheus/registry.h"

namespace microrl::metrics {

// The process's Prometheus endpoint: serves `registry` plus a ProcessCollector,
// in the Prometheus text format (prometheus-cpp's serializer), at
// http://<host>:<port>/metrics. Metric families are created by the components
// that own them, in their constructors, on the shared registry.
//
// Why not prometheus::Exposer: its HTTP server (civetweb) starts threads with
// 100 KiB stacks, smaller than the static TLS of LibTorch plus its CUDA
// libraries (~150 KiB), so pthread_create fails in any process that links
// LibTorch; and it takes up to 2 s to stop. This endpoint is one thread
// answering one short request per connection (HTTP/1.0 semantics, 8 KiB request
// limit, 2 s per connection); it stops in milliseconds, also while a client is
// connected.
//
// Thread-safe: all state after Start belongs to the serving thread.
class MetricsServer {
 public:
  // Binds host:port (port 0 picks a free port) and starts serving. Unavailable
  // if the address cannot be bound (the message names it).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& host, int port,
      std::shared_ptr<prometheus::Registry> registry,
      const std::string& component);

  // Stops serving and closes the socket.
  ~MetricsServer();

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The port really bound.
  int port() const { return port_; }

  // The body served at /metrics now.
  std::string Render() const;

 private:
  MetricsServer(int listen_fd, int port,
                std::shared_ptr<prometheus::Registry> registry,
                std::shared_ptr<ProcessCollector> process);

  void Serve();
  void HandleConnection(int fd) const;

  const int listen_fd_;
  const int port_;
  int wake_fds_[2] = {-1, -1};  // a pipe: writing to [1] stops Serve()
  const std::shared_ptr<prometheus::Registry> registry_;
  const std::shared_ptr<ProcessCollector> process_;
  std::thread thread_;
};

}  // namespace microrl::metrics

#endif  // MICRORL_COMMON_METRICS_METRICS_SERVER_H_
