// The Reward gRPC service over a real server on loopback.
#include "reward_service/reward_service.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "common/rpc/client.h"
#include "common/rpc/service_host.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"

namespace microrl::reward {
namespace {

using ::testing::HasSubstr;

class RewardServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RewardServiceOptions options;
    options.max_batch_items = 4;
    options.threads = 2;
    service_ = std::make_unique<RewardService>(options, identity_, registry_);
    absl::StatusOr<std::unique_ptr<rpc::ServiceHost>> host =
        rpc::ServiceHost::Start({}, {{service_.get(), "microrl.v1.Reward"}},
                                registry_);
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    stub_ = v1::Reward::NewStub(
        rpc::MakeChannel(absl::StrCat("127.0.0.1:", host_->port())));
  }

  grpc::Status Score(const v1::ScoreRequest& request,
                     v1::ScoreResponse* response) {
    grpc::ClientContext context;
    return stub_->Score(&context, request, response);
  }

  double Counter(const std::string& name, const std::string& label,
                 const std::string& value) {
    for (const prometheus::MetricFamily& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const prometheus::ClientMetric& metric : family.metric) {
        if (label.empty() ||
            (!metric.label.empty() && metric.label[0].name == label &&
             metric.label[0].value == value)) {
          return metric.counter.value;
        }
      }
    }
    return -1;
  }

  prometheus::Registry registry_;
  rpc::ProcessIdentity identity_{"reward_service"};
  std::unique_ptr<RewardService> service_;
  std::unique_ptr<rpc::ServiceHost> host_;
  std::unique_ptr<v1::Reward::Stub> stub_;
};

v1::ScoreItem Item(const std::string& id, const std::string& completion,
                   const std::string& truth) {
  v1::ScoreItem item;
  item.set_id(id);
  item.set_completion(completion);
  item.set_ground_truth(truth);
  return item;
}

TEST_F(RewardServiceTest, ScoresABatchInOrderAndCountsIt) {
  v1::ScoreRequest request;
  *request.add_items() =
      Item("right", "<think>a</think> \\boxed{\\frac{1}{2}}", "0.5");
  *request.add_items() = Item("wrong", "<think>a</think> \\boxed{3}", "4");
  *request.add_items() = Item("no-format", "\\boxed{4}", "4");
  v1::ScoreResponse response;
  const grpc::Status status = Score(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 3);
  EXPECT_EQ(response.results(0).id(), "right");
  EXPECT_TRUE(response.results(0).correct());
  EXPECT_DOUBLE_EQ(response.results(0).reward(), 1.1);
  EXPECT_EQ(response.results(0).components().at("format"), 1.0);
  EXPECT_EQ(response.results(0).extracted_answer(), "\\frac{1}{2}");
  EXPECT_FALSE(response.results(1).correct());
  EXPECT_THAT(response.results(1).reason(),
              HasSubstr("answer 3 != reference 4"));
  EXPECT_TRUE(response.results(2).correct());
  EXPECT_EQ(response.results(2).components().at("format"), 0.0);
  EXPECT_EQ(Counter("microrl_reward_items_total", "correct", "true"), 2);
  EXPECT_EQ(Counter("microrl_reward_items_total", "correct", "false"), 1);
  EXPECT_EQ(Counter("microrl_reward_format_total", "well_formed", "false"), 1);
}

TEST_F(RewardServiceTest, BadRequestsAreInvalidArgumentWithTheField) {
  struct Case {
    v1::ScoreRequest request;
    std::string message;
  };
  std::vector<Case> cases(4);
  cases[0].message = "at least one item";
  for (int i = 0; i < 5; ++i)
    *cases[1].request.add_items() = Item("x", "y", "z");
  cases[1].message = "5 items exceed the limit of 4";
  *cases[2].request.add_items() =
      Item("x", std::string((1 << 20) + 1, 'a'), "1");
  cases[2].message = "items[0].completion";
  *cases[3].request.add_items() = Item("x", "y", "1");
  cases[3].request.set_item_deadline_seconds(-1);
  cases[3].message = "item_deadline_seconds";
  for (const Case& c : cases) {
    v1::ScoreResponse response;
    const grpc::Status status = Score(c.request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  EXPECT_EQ(Counter("microrl_reward_rejected_requests_total", "", ""), 4);
}

TEST_F(RewardServiceTest, GetInfoReportsTheConfiguration) {
  grpc::ClientContext context;
  v1::RewardInfo info;
  ASSERT_TRUE(stub_->GetInfo(&context, v1::GetInfoRequest(), &info).ok());
  EXPECT_EQ(info.name(), "math_format_v2");
  EXPECT_EQ(info.component_weights().at("format"), 0.1);
  EXPECT_EQ(info.component_weights().at("correct"), 1.0);
  EXPECT_EQ(info.max_batch_items(), 4);
  EXPECT_EQ(info.item_deadline_seconds(), 5.0);
}

}  // namespace
}  // namespace microrl::reward
