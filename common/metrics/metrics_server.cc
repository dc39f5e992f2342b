#include "common/metrics/metrics_server.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/base/logging.h"
#include "common/base/net.h"
#include "prometheus/text_serializer.h"

namespace microrl::metrics {
namespace {

constexpr size_t kMaxRequestBytes = 8192;
// Time a client gets to send its request and read the answer.
constexpr absl::Duration kConnectionTimeout = absl::Seconds(2);
// Connections answered at once; more wait in a queue of kMaxQueued, and past
// that are closed unanswered (a scraper retries at its next interval).
constexpr int kWorkers = 4;
constexpr size_t kMaxQueued = 64;

std::string Response(int code, absl::string_view reason,
                     absl::string_view content_type, absl::string_view body) {
  return absl::StrCat("HTTP/1.1 ", code, " ", reason,
                      "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", body.size(),
                      "\r\nConnection: close\r\n\r\n", body);
}

// Binds and listens on the first address of host:port that works; returns the
// fd.
absl::StatusOr<int> Listen(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const std::string address = JoinHostPort(host, port);
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(),
                                 &hints, &result);
      rc != 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve metrics on ", address, ": ", gai_strerror(rc)));
  }
  std::string error = "no usable address";
  int fd = -1;
  for (addrinfo* ai = result; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      error = strerror(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
      error = strerror(errno);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(result);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", error));
  }
  return fd;
}

// One client connection, bounded by a single deadline for the whole exchange
// and abandoned at once when the server stops.
class Connection {
 public:
  Connection(int fd, int wake_fd)
      : fd_(fd),
        wake_fd_(wake_fd),
        deadline_(absl::Now() + kConnectionTimeout) {}

  // Receives into `buffer`; 0 when the peer closed, the deadline passed, the
  // server is stopping or the socket failed.
  size_t Receive(char* buffer, size_t size) {
    if (!Wait(POLLIN)) return 0;
    const ssize_t n = recv(fd_, buffer, size, MSG_DONTWAIT);
    return n > 0 ? static_cast<size_t>(n) : 0;
  }

  // Sends without ever blocking past the deadline (or the stop): a client
  // that does not read is cut off, not waited for.
  void SendAll(const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = send(fd_, data.data() + sent, data.size() - sent,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return;
      if (!Wait(POLLOUT)) return;
    }
  }

  // Sends an error response, then reads (and drops) what the client still
  // sends, so that closing the socket does not reset the connection before the
  // client reads the answer.
  void SendErrorAndDrain(const std::string& response) {
    SendAll(response);
    shutdown(fd_, SHUT_WR);
    char buffer[4096];
    for (size_t drained = 0; drained < 65536;) {
      const size_t n = Receive(buffer, sizeof(buffer));
      if (n == 0) break;
      drained += n;
    }
  }

 private:
  // Until the socket is ready for `events`; false at the deadline, when the
  // server stops, or on an error.
  bool Wait(short events) {
    while (true) {
      const int64_t ms = absl::ToInt64Milliseconds(deadline_ - absl::Now());
      if (ms <= 0) return false;
      pollfd fds[2] = {{fd_, events, 0}, {wake_fd_, POLLIN, 0}};
      const int ready = poll(fds, 2, static_cast<int>(ms));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0 || fds[1].revents != 0) return false;
      return (fds[0].revents & events) != 0;
    }
  }

  const int fd_;
  const int wake_fd_;
  const absl::Time deadline_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& host, int port,
    std::shared_ptr<prometheus::Registry> registry,
    const std::string& component, MetricLabels labels) {
  absl::StatusOr<int> fd = Listen(host, port);
  if (!fd.ok()) return fd.status();
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  getsockname(*fd, reinterpret_cast<sockaddr*>(&bound), &length);
  const int bound_port =
      bound.ss_family == AF_INET6
          ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
          : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  std::unique_ptr<MetricsServer> server(new MetricsServer(
      *fd, bound_port, std::move(registry),
      std::make_shared<ProcessCollector>(component), std::move(labels)));
  if (pipe2(server->wake_fds_, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  for (int i = 0; i < kWorkers; ++i) {
    server->workers_.emplace_back([s = server.get()] { s->Work(); });
  }
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

MetricsServer::MetricsServer(int listen_fd, int port,
                             std::shared_ptr<prometheus::Registry> registry,
                             std::shared_ptr<ProcessCollector> process,
                             MetricLabels labels)
    : listen_fd_(listen_fd),
      port_(port),
      registry_(std::move(registry)),
      process_(std::move(process)),
      labels_(std::move(labels)) {}

MetricsServer::~MetricsServer() {
  if (wake_fds_[1] >= 0) {
    // Never read: the pipe stays readable, so every poll sees the stop.
    const char stop = 's';
    (void)!write(wake_fds_[1], &stop, 1);
  }
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  for (int fd : queue_) close(fd);
  for (int fd : wake_fds_) {
    if (fd >= 0) close(fd);
  }
  close(listen_fd_);
}

std::string MetricsServer::Render() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (prometheus::MetricFamily& family : process_->Collect()) {
    families.push_back(std::move(family));
  }
  if (!labels_.empty()) {
    for (prometheus::MetricFamily& family : families) {
      for (prometheus::ClientMetric& metric : family.metric) {
        for (const auto& [name, value] : labels_)
          metric.label.push_back({name, value});
      }
    }
  }
  return prometheus::TextSerializer().Serialize(families);
}

void MetricsServer::Serve() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fds_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      MRL_LOG(ERROR) << "metrics server poll: " << strerror(errno);
      return;
    }
    if (fds[1].revents != 0) return;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      // Out of descriptors or a socket error: back off instead of spinning.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    bool queued = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.size() < kMaxQueued) {
        queue_.push_back(fd);
        queued = true;
      }
    }
    if (queued) {
      ready_.notify_one();
    } else {
      close(fd);  // a flood: this one goes unanswered
    }
  }
}

void MetricsServer::Work() {
  while (true) {
    int fd = -1;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      fd = queue_.front();
      queue_.pop_front();
    }
    HandleConnection(fd);
    close(fd);
  }
}

void MetricsServer::HandleConnection(int fd) const {
  Connection connection(fd, wake_fds_[0]);
  std::string request;
  char buffer[2048];
  while (!absl::StrContains(request, "\r\n\r\n") &&
         !absl::StrContains(request, "\n\n")) {
    if (request.size() > kMaxRequestBytes) {
      connection.SendErrorAndDrain(
          Response(431, "Request Header Fields Too Large", "text/plain", ""));
      return;
    }
    const size_t n = connection.Receive(buffer, sizeof(buffer));
    if (n == 0) return;  // closed, too slow, or stopping: nothing to answer
    request.append(buffer, n);
  }
  const std::string request_line =
      request.substr(0, request.find_first_of("\r\n"));
  const std::vector<absl::string_view> parts =
      absl::StrSplit(request_line, ' ');
  if (parts.size() != 3 || !absl::StartsWith(parts[2], "HTTP/")) {
    connection.SendErrorAndDrain(
        Response(400, "Bad Request", "text/plain", "malformed request line\n"));
    return;
  }
  if (parts[0] != "GET") {
    connection.SendErrorAndDrain(
        Response(405, "Method Not Allowed", "text/plain", "only GET\n"));
    return;
  }
  const absl::string_view path = parts[1].substr(0, parts[1].find('?'));
  if (path != "/metrics") {
    connection.SendAll(
        Response(404, "Not Found", "text/plain", "metrics are at /metrics\n"));
    return;
  }
  connection.SendAll(Response(
      200, "OK", "text/plain; version=0.0.4; charset=utf-8", Render()));
}

}  // namespace microrl::metrics
