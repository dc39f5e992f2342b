#include "common/rpc/service_host.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/rpc/client.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "proto/reward.grpc.pb.h"

namespace microrl::rpc {
namespace {

using ::testing::HasSubstr;
using Health = grpc::health::v1::HealthCheckResponse;

// A Reward service whose Score blocks until the call is cancelled, to test
// shutdown with a call in flight.
class BlockingRewardService final : public v1::Reward::Service {
 public:
  grpc::Status Score(grpc::ServerContext* context, const v1::ScoreRequest*,
                     v1::ScoreResponse*) override {
    entered_.Notify();
    while (!context->IsCancelled()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
  absl::Notification& entered() { return entered_; }

 private:
  absl::Notification entered_;
};

// Value of microrl_rpc_server_handled_total for one method and code (0 if
// absent).
double Handled(prometheus::Registry& registry, const std::string& method,
               const std::string& code) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != "microrl_rpc_server_handled_total") continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& label : metric.label) labels[label.name] = label.value;
      if (labels["method"] == method && labels["code"] == code)
        return metric.counter.value;
    }
  }
  return 0;
}

// A host serving `reward` alone.
absl::StatusOr<std::unique_ptr<ServiceHost>> ServeReward(
    BlockingRewardService& reward, prometheus::Registry& registry,
    const ServiceHostOptions& options = {}) {
  return ServiceHost::Start(options, {{&reward, "microrl.v1.Reward"}},
                            registry);
}

std::string Address(const ServiceHost& host) {
  return absl::StrCat("127.0.0.1:", host.port());
}

TEST(ServiceHostTest, ServesHealthPerServiceAndCountsCalls) {
  prometheus::Registry registry;
  BlockingRewardService reward;
  absl::StatusOr<std::unique_ptr<ServiceHost>> host =
      ServeReward(reward, registry);
  ASSERT_TRUE(host.ok()) << host.status();
  ASSERT_GT((*host)->port(), 0);
  auto channel = MakeChannel(Address(**host));

  EXPECT_EQ(*CheckHealth(channel, "", absl::Seconds(5)), Health::SERVING);
  EXPECT_EQ(*CheckHealth(channel, "microrl.v1.Reward", absl::Seconds(5)),
            Health::SERVING);
  const absl::StatusOr<HealthStatus> unknown =
      CheckHealth(channel, "microrl.v1.Nope", absl::Seconds(5));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);

  // GetInfo is not overridden by this service: the generated base answers
  // UNIMPLEMENTED.
  grpc::ClientContext context;
  v1::RewardInfo info;
  EXPECT_EQ(v1::Reward::NewStub(channel)
                ->GetInfo(&context, v1::GetInfoRequest(), &info)
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);

  const std::string check = "/grpc.health.v1.Health/Check";
  EXPECT_EQ(Handled(registry, check, "OK"), 2);
  EXPECT_EQ(Handled(registry, check, "NOT_FOUND"), 1);
  EXPECT_EQ(Handled(registry, "/microrl.v1.Reward/GetInfo", "UNIMPLEMENTED"),
            1);
}

TEST(ServiceHostTest, NeedsAService) {
  prometheus::Registry registry;
  EXPECT_EQ(ServiceHost::Start({}, {}, registry).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ServiceHostTest, PortInUseIsUnavailable) {
  prometheus::Registry registry;
  BlockingRewardService reward;
  absl::StatusOr<std::unique_ptr<ServiceHost>> first =
      ServeReward(reward, registry);
  ASSERT_TRUE(first.ok()) << first.status();
  ServiceHostOptions options;
  options.port = (*first)->port();
  prometheus::Registry other_registry;
  BlockingRewardService other;
  const absl::StatusOr<std::unique_ptr<ServiceHost>> second =
      ServeReward(other, other_registry, options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr(Address(**first)));
}

TEST(ServiceHostTest, ShutdownCancelsInFlightCallsAfterGraceAndStopsServing) {
  prometheus::Registry registry;
  BlockingRewardService reward;
  ServiceHostOptions options;
  options.shutdown_grace = absl::Milliseconds(200);
  absl::StatusOr<std::unique_ptr<ServiceHost>> host =
      ServeReward(reward, registry, options);
  ASSERT_TRUE(host.ok()) << host.status();
  auto channel = MakeChannel(Address(**host));

  grpc::Status call_status;
  std::thread caller([&] {
    grpc::ClientContext context;
    v1::ScoreResponse response;
    call_status = v1::Reward::NewStub(channel)->Score(
        &context, v1::ScoreRequest(), &response);
  });
  ASSERT_TRUE(
      reward.entered().WaitForNotificationWithTimeout(absl::Seconds(30)));
  (*host)->Shutdown();
  caller.join();
  EXPECT_FALSE(call_status.ok());
  (*host)->Shutdown();  // idempotent

  const absl::StatusOr<HealthStatus> after =
      CheckHealth(channel, "", absl::Seconds(1));
  EXPECT_FALSE(after.ok());
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace microrl::rpc
