#include "learner/peer_monitor.h"

#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/rpc/process_identity.h"
#include "common/rpc/service_host.h"
#include "gtest/gtest.h"
#include "reward_service/reward_service.h"
#include "tests/support/subprocess.h"

namespace microrl::learner {
namespace {

std::map<std::string, double> PeerUp(prometheus::Registry& registry) {
  std::map<std::string, double> up;
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != "microrl_learner_peer_up") continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      up[metric.label.at(0).value] = metric.gauge.value;
    }
  }
  return up;
}

// A real reward service on a loopback port, as the learner's peer.
class PeerMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<rpc::ServiceHost>> host =
        rpc::ServiceHost::Start({}, {{&reward_, "microrl.v1.Reward"}},
                                server_registry_);
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    reward_address_ = absl::StrCat("127.0.0.1:", host_->port());
  }

  prometheus::Registry server_registry_;
  rpc::ProcessIdentity identity_{"reward_service"};
  reward::RewardService reward_{{}, identity_, server_registry_};
  std::unique_ptr<rpc::ServiceHost> host_;
  std::string reward_address_;
};

TEST_F(PeerMonitorTest,
       ClassifiesServingUnreachableMisconfiguredAndAbsentPeers) {
  const std::string& reward_address = reward_address_;
  const testing::ClosedPort closed;
  const std::string closed_address = absl::StrCat("127.0.0.1:", closed.port());

  prometheus::Registry registry;
  PeerMonitor monitor({{"reward", reward_address, "microrl.v1.Reward"},
                       {"rollout", closed_address, "microrl.v1.Rollout"},
                       // A live server that does not host the probed service.
                       {"wrong", reward_address, "microrl.v1.Rollout"},
                       {"none", "", "microrl.v1.Learner"}},
                      /*interval=*/absl::ZeroDuration(),
                      /*timeout=*/absl::Seconds(2), registry);
  monitor.ProbeAll();
  const std::vector<v1::PeerStatus> peers = monitor.Snapshot();
  ASSERT_EQ(peers.size(), 4u);
  EXPECT_EQ(peers[0].role(), "reward");
  EXPECT_EQ(peers[0].address(), reward_address);
  EXPECT_EQ(peers[0].health(), v1::PEER_HEALTH_SERVING);
  EXPECT_EQ(peers[0].detail(), "");
  EXPECT_EQ(peers[1].health(), v1::PEER_HEALTH_UNREACHABLE);
  EXPECT_NE(peers[1].detail(), "");
  EXPECT_EQ(peers[2].health(), v1::PEER_HEALTH_NOT_SERVING);
  EXPECT_EQ(peers[3].health(), v1::PEER_HEALTH_NOT_CONFIGURED);

  const std::map<std::string, double> up = PeerUp(registry);
  EXPECT_EQ(up.at("reward"), 1.0);
  EXPECT_EQ(up.at("rollout"), 0.0);
  EXPECT_EQ(up.at("wrong"), 0.0);

  // The peer going away is noticed on the next probe.
  host_->Shutdown();
  monitor.ProbeAll();
  EXPECT_EQ(monitor.Snapshot()[0].health(), v1::PEER_HEALTH_UNREACHABLE);
  EXPECT_EQ(PeerUp(registry).at("reward"), 0.0);
}

TEST_F(PeerMonitorTest, BackgroundProbesStartAtOnceAndStopPromptly) {
  prometheus::Registry registry;
  PeerMonitor monitor({{"reward", reward_address_, "microrl.v1.Reward"}},
                      /*interval=*/absl::Hours(1),
                      /*timeout=*/absl::Seconds(10), registry);
  // The first background probe runs at start, not after an interval.
  for (int i = 0;
       i < 1000 && monitor.Snapshot()[0].health() != v1::PEER_HEALTH_SERVING;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(monitor.Snapshot()[0].health(), v1::PEER_HEALTH_SERVING);
  monitor.Stop();  // returns without waiting out the hour-long interval
}

}  // namespace
}  // namespace microrl::learner
