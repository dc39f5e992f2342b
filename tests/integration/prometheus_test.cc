// A real Prometheus server (Debian's `prometheus`, installed by
// deploy/setup.sh) scrapes the three services; the test asks it, through its
// HTTP API, what it collected.
#include <signal.h>

#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/client.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/reward.grpc.pb.h"
#include "tests/integration/launcher.h"
#include "tests/support/http.h"
#include "tests/support/subprocess.h"

namespace microrl::testing {
namespace {

constexpr char kPrometheus[] = "/usr/bin/prometheus";

// The `data.result` array of an instant query, or an empty array on any error.
nlohmann::json Query(int port, const std::string& promql) {
  absl::StatusOr<HttpResponse> response =
      HttpGet("127.0.0.1", port, "/api/v1/query?query=" + UrlEncode(promql));
  if (!response.ok() || response->status != 200) return nlohmann::json::array();
  const nlohmann::json json =
      nlohmann::json::parse(response->body, nullptr, false);
  if (json.is_discarded() || json.value("status", "") != "success") {
    return nlohmann::json::array();
  }
  return json["data"]["result"];
}

// Polls `promql` until `done(result)` or a minute passes; returns the last
// result.
nlohmann::json QueryUntil(
    int port, const std::string& promql,
    const std::function<bool(const nlohmann::json&)>& done) {
  const absl::Time deadline = absl::Now() + absl::Minutes(1);
  nlohmann::json result;
  do {
    result = Query(port, promql);
    if (done(result)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  } while (absl::Now() < deadline);
  return result;
}

TEST(PrometheusTest, ScrapesAllThreeServices) {
  const std::string dir = MakeTempDir();
  absl::StatusOr<RunningService> reward =
      StartService(REWARD_SERVICE_BIN, "reward", dir);
  absl::StatusOr<RunningService> rollout =
      StartService(ROLLOUT_SERVER_BIN, "rollout", dir);
  ASSERT_TRUE(reward.ok()) << reward.status();
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  absl::StatusOr<RunningService> learner =
      StartService(LEARNER_BIN, "learner", dir,
                   {"--rollout_address=" + rollout->grpc_address(),
                    "--reward_address=" + reward->grpc_address()});
  ASSERT_TRUE(learner.ok()) << learner.status();

  const std::string config = dir + "/prometheus.yml";
  std::ofstream(config)
      << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
      << "scrape_configs:\n"
      << "  - job_name: reward_service\n"
      << "    static_configs: [{targets: ['127.0.0.1:"
      << reward->ready.metrics_port << "']}]\n"
      << "  - job_name: rollout_server\n"
      << "    static_configs: [{targets: ['127.0.0.1:"
      << rollout->ready.metrics_port << "']}]\n"
      << "  - job_name: learner\n"
      << "    static_configs: [{targets: ['127.0.0.1:"
      << learner->ready.metrics_port << "']}]\n";
  // Prometheus cannot bind port 0 and report it: pick a free port, and pick
  // again if another process took it first (Prometheus then exits).
  int port = 0;
  std::unique_ptr<Subprocess> prometheus;
  for (int attempt = 0; attempt < 5 && prometheus == nullptr; ++attempt) {
    port = PickFreePort();
    absl::StatusOr<std::unique_ptr<Subprocess>> started = Subprocess::Start(
        {kPrometheus, "--config.file=" + config,
         "--storage.tsdb.path=" + dir + "/tsdb",
         absl::StrCat("--web.listen-address=127.0.0.1:", port)},
        dir + "/prometheus.log");
    ASSERT_TRUE(started.ok()) << started.status();
    const absl::Time deadline = absl::Now() + absl::Minutes(1);
    while (absl::Now() < deadline) {
      absl::StatusOr<HttpResponse> ready =
          HttpGet("127.0.0.1", port, "/-/ready");
      if (ready.ok() && ready->status == 200) {
        prometheus = std::move(*started);
        break;
      }
      if ((*started)->Wait(absl::ZeroDuration()).has_value())
        break;  // port taken
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ASSERT_NE(prometheus, nullptr) << "Prometheus did not start; see " << dir;

  // Every target scraped successfully.
  const nlohmann::json up = QueryUntil(port, "up", [](const nlohmann::json& r) {
    if (r.size() != 3) return false;
    for (const auto& series : r) {
      if (series["value"][1] != "1") return false;
    }
    return true;
  });
  ASSERT_EQ(up.size(), 3u) << up.dump() << "\n" << prometheus->Output();
  for (const auto& series : up)
    EXPECT_EQ(series["value"][1], "1") << series.dump();

  // Each process identifies itself.
  const nlohmann::json build =
      QueryUntil(port, "microrl_build_info",
                 [](const nlohmann::json& r) { return r.size() == 3; });
  std::set<std::string> components;
  for (const auto& series : build)
    components.insert(series["metric"]["component"]);
  EXPECT_EQ(components, (std::set<std::string>{"learner", "reward_service",
                                               "rollout_server"}));

  // An RPC shows up in the RPC counters at the next scrape.
  {
    auto stub = v1::Reward::NewStub(rpc::MakeChannel(reward->grpc_address()));
    grpc::ClientContext context;
    v1::RewardInfo info;
    ASSERT_TRUE(stub->GetInfo(&context, v1::GetInfoRequest(), &info).ok());
  }
  const std::string promql =
      "microrl_rpc_server_handled_total{job=\"reward_service\","
      "method=\"/microrl.v1.Reward/GetInfo\",code=\"OK\"}";
  const nlohmann::json calls =
      QueryUntil(port, promql, [](const nlohmann::json& r) {
        return r.size() == 1 && r[0]["value"][1] == "1";
      });
  ASSERT_EQ(calls.size(), 1u) << calls.dump();
  EXPECT_EQ(calls[0]["value"][1], "1");

  // Process metrics parse as numbers Prometheus accepts.
  const nlohmann::json memory =
      QueryUntil(port, "microrl_process_resident_memory_bytes > 0",
                 [](const nlohmann::json& r) { return r.size() == 3; });
  EXPECT_EQ(memory.size(), 3u) << memory.dump();

  prometheus->Signal(SIGTERM);
  EXPECT_TRUE(prometheus->Wait(absl::Seconds(30)).has_value());
}

}  // namespace
}  // namespace microrl::testing
