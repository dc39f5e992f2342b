#ifndef MICRORL_COMMON_METRICS_METRICS_SERVER_H_
#define MICRORL_COMMON_METRICS_METRICS_SERVER_H_

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics/process_collector.h"
#include "prometheus/registry.h"

namespace microrl::metrics {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// The process's Prometheus endpoint: serves `registry` plus a ProcessCollector,
// in the Prometheus text format (prometheus-cpp's serializer), at
// http://<host>:<port>/metrics. Metric families are created by the components
// that own them, in their constructors, on the shared registry.
//
// Why not prometheus::Exposer: its HTTP server (civetweb) starts threads with
// 100 KiB stacks, smaller than the static TLS of LibTorch plus its CUDA
// libraries (~150 KiB), so pthread_create fails in any process that links
// LibTorch; and it takes up to 2 s to stop. This endpoint answers one short
// request per connection (HTTP/1.0 semantics, 8 KiB request limit), four
// connections at a time with up to 64 waiting (more are closed unanswered).
// Each connection gets 2 s in all to send its request and read the answer,
// with non-blocking sends, so a client that never reads holds one worker for
// at most 2 s and cannot wedge the endpoint. It stops in milliseconds, also
// while clients are connected.
//
// Thread-safe.
class MetricsServer {
 public:
  // Binds host:port (port 0 picks a free port) and starts serving. Unavailable
  // if the address cannot be bound (the message names it).
  // `labels` are added to every metric served (e.g. a data-parallel rank's
  // {"rank", "3"}), so the replicas of one job stay apart when aggregated.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& host, int port,
      std::shared_ptr<prometheus::Registry> registry,
      const std::string& component, MetricLabels labels = {});

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
                std::shared_ptr<ProcessCollector> process, MetricLabels labels);

  void Serve();  // accepts connections into queue_
  void Work();   // answers them
  void HandleConnection(int fd) const;

  const int listen_fd_;
  const int port_;
  int wake_fds_[2] = {-1, -1};  // a pipe: writing to [1] stops Serve()
  const std::shared_ptr<prometheus::Registry> registry_;
  const std::shared_ptr<ProcessCollector> process_;
  const MetricLabels labels_;
  std::thread thread_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<int> queue_;  // accepted connections; guarded by mu_
  bool stopping_ = false;  // guarded by mu_
};

}  // namespace microrl::metrics

#endif  // MICRORL_COMMON_METRICS_METRICS_SERVER_H_
