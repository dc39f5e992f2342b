#include "common/metrics/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "tests/support/http.h"

namespace microrl::metrics {
namespace {

using ::microrl::testing::HttpGet;
using ::microrl::testing::HttpRawRequest;
using ::testing::HasSubstr;

// The HTTP status of a response; -1 (and a test failure) if the request failed.
int StatusOf(const absl::StatusOr<testing::HttpResponse>& response) {
  EXPECT_TRUE(response.ok()) << response.status();
  return response.ok() ? response->status : -1;
}

std::string BodyOf(const absl::StatusOr<testing::HttpResponse>& response) {
  EXPECT_TRUE(response.ok()) << response.status();
  return response.ok() ? response->body : "";
}

std::unique_ptr<MetricsServer> StartOrDie(
    std::shared_ptr<prometheus::Registry> registry, int port = 0) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("127.0.0.1", port, std::move(registry), "unit");
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

TEST(MetricsServerTest, ServesRegistryAndProcessMetrics) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("microrl_test_events_total")
                     .Help("Events.")
                     .Register(*registry);
  family.Add({{"kind", "a"}}).Increment(3);
  std::unique_ptr<MetricsServer> server = StartOrDie(registry);
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->port(), 0);

  const absl::StatusOr<testing::HttpResponse> response =
      HttpGet("127.0.0.1", server->port(), "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_THAT(response->headers, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(response->body,
              HasSubstr("microrl_test_events_total{kind=\"a\"} 3"));
  EXPECT_THAT(
      response->body,
      HasSubstr(absl::StrCat("microrl_build_info{component=\"unit\",version=\"",
                             Version(), "\"} 1")));
  EXPECT_THAT(response->body,
              HasSubstr("# TYPE microrl_process_cpu_seconds_total counter"));
  EXPECT_THAT(response->body,
              HasSubstr("microrl_process_resident_memory_bytes "));

  // A change is visible on the next scrape.
  family.Add({{"kind", "a"}}).Increment();
  EXPECT_THAT(BodyOf(HttpGet("127.0.0.1", server->port(), "/metrics")),
              HasSubstr("microrl_test_events_total{kind=\"a\"} 4"));
}

TEST(MetricsServerTest, AddsItsLabelsToEveryMetric) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge()
      .Name("microrl_test_level")
      .Help("Level.")
      .Register(*registry)
      .Add({{"kind", "b"}})
      .Set(2);
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("127.0.0.1", 0, registry, "unit", {{"rank", "3"}});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string body = (*server)->Render();
  EXPECT_THAT(body, HasSubstr("microrl_test_level{kind=\"b\",rank=\"3\"} 2"));
  EXPECT_THAT(body,
              HasSubstr("microrl_process_resident_memory_bytes{rank=\"3\"} "));
}

TEST(MetricsServerTest, AnswersBadRequestsWithoutDying) {
  std::unique_ptr<MetricsServer> server =
      StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  EXPECT_EQ(StatusOf(HttpGet("127.0.0.1", port, "/")), 404);
  EXPECT_EQ(StatusOf(HttpRawRequest("127.0.0.1", port,
                                    "POST /metrics HTTP/1.0\r\n\r\n")),
            405);
  EXPECT_EQ(StatusOf(HttpRawRequest("127.0.0.1", port, "garbage\r\n\r\n")),
            400);
  EXPECT_EQ(StatusOf(HttpRawRequest(
                "127.0.0.1", port,
                "GET /metrics HTTP/1.0\r\nX: " + std::string(9000, 'a'))),
            431);
  // Query strings are ignored; the endpoint still serves afterwards.
  EXPECT_EQ(StatusOf(HttpGet("127.0.0.1", port, "/metrics?x=1")), 200);
}

TEST(MetricsServerTest, ASlowClientIsCutOffAndDoesNotDelayStopping) {
  std::unique_ptr<MetricsServer> server =
      StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(server, nullptr);
  // A client that never finishes its request gets no answer, and the endpoint
  // serves others once the connection's time is up.
  const absl::StatusOr<testing::HttpResponse> slow =
      HttpRawRequest("127.0.0.1", server->port(), "GET /metrics HTTP/1.0\r\n",
                     absl::Seconds(30));
  EXPECT_FALSE(slow.ok());
  EXPECT_EQ(StatusOf(HttpGet("127.0.0.1", server->port(), "/metrics")), 200);

  // While a client holds a connection open, stopping does not wait for it.
  const int port = server->port();
  std::thread holder([port] {
    (void)HttpRawRequest("127.0.0.1", port, "GET /metr", absl::Seconds(30));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  server.reset();
  holder.join();
  EXPECT_EQ(HttpGet("127.0.0.1", port, "/metrics").status().code(),
            absl::StatusCode::kUnavailable);
}

// A client that asks for the metrics and never reads the answer (with a tiny
// receive window, so the answer cannot fit in the socket buffers) neither
// blocks other scrapers nor the stop.
TEST(MetricsServerTest, AClientThatNeverReadsCannotWedgeTheEndpoint) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildGauge()
                     .Name("microrl_test_big")
                     .Help("Many series, so that the answer is megabytes.")
                     .Register(*registry);
  for (int i = 0; i < 100000; ++i) {
    family.Add({{"series", absl::StrCat("a-label-value-long-enough-", i)}})
        .Set(i);
  }
  std::unique_ptr<MetricsServer> server = StartOrDie(registry);
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->Render().size(), size_t{4} << 20);

  std::vector<int> stalled;
  for (int i = 0; i < 3; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    const int tiny = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &tiny, sizeof(tiny));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(server->port()));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(
        connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
    ASSERT_EQ(send(fd, request.data(), request.size(), 0),
              static_cast<ssize_t>(request.size()));
    stalled.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // Others are served meanwhile, and after the stalled ones are cut off.
  const absl::StatusOr<testing::HttpResponse> other =
      HttpGet("127.0.0.1", server->port(), "/metrics", absl::Seconds(20));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->status, 200);
  EXPECT_THAT(other->body, HasSubstr("microrl_test_big{series=\"a-label-"));
  // Stopping does not wait for the stalled clients (they still hold their
  // connections, unread).
  server.reset();
  for (int fd : stalled) close(fd);
}

TEST(MetricsServerTest, PortInUseIsUnavailableNamingTheAddress) {
  std::unique_ptr<MetricsServer> first =
      StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(first, nullptr);
  const absl::StatusOr<std::unique_ptr<MetricsServer>> second =
      MetricsServer::Start("127.0.0.1", first->port(),
                           std::make_shared<prometheus::Registry>(), "unit");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr(absl::StrCat("127.0.0.1:", first->port())));
}

TEST(MetricsServerTest, StopsAndReleasesThePort) {
  std::unique_ptr<MetricsServer> server =
      StartOrDie(std::make_shared<prometheus::Registry>());
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  server.reset();
  EXPECT_EQ(HttpGet("127.0.0.1", port, "/metrics").status().code(),
            absl::StatusCode::kUnavailable);
  // The port can be bound again at once.
  EXPECT_NE(StartOrDie(std::make_shared<prometheus::Registry>(), port),
            nullptr);
}

}  // namespace
}  // namespace microrl::metrics
