// A custom reward service written in Python (reward_service/examples) serves
// the learner's C++ RewardClient, as microrl's own reward_service does.
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "common/rpc/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "learner/reward_client.h"
#include "tests/integration/launcher.h"
#include "tests/support/subprocess.h"

namespace microrl::testing {
namespace {

using ::testing::HasSubstr;

class CustomRewardTest : public ::testing::TestWithParam<std::string> {};

// Runs the same checks against the Python example and against reward_service.
TEST_P(CustomRewardTest, RewardClientScoresThroughAnyImplementation) {
  const std::string dir = MakeTempDir();
  const bool python = GetParam() == "python";
  absl::StatusOr<RunningService> server = absl::InternalError("unset");
  if (python) {
    const std::string ready = dir + "/python.ready";
    absl::StatusOr<std::unique_ptr<Subprocess>> process =
        Subprocess::Start({MICRORL_PYTHON, PYTHON_REWARD_SERVER, "--port=0",
                           "--ready_file=" + ready},
                          dir + "/python.log");
    ASSERT_TRUE(process.ok()) << process.status();
    ASSERT_TRUE(WaitForFile(ready, absl::Minutes(1))) << (*process)->Output();
    absl::StatusOr<ReadyInfo> info = ReadReadyFile(ready);
    ASSERT_TRUE(info.ok()) << info.status();
    server = RunningService{*std::move(process), *info, ready};
  } else {
    server = StartService(REWARD_SERVICE_BIN, "reward_service", dir);
  }
  ASSERT_TRUE(server.ok()) << server.status();

  auto health = rpc::CheckHealth(rpc::MakeChannel(server->grpc_address()),
                                 "microrl.v1.Reward", absl::Seconds(10));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);

  absl::StatusOr<std::unique_ptr<learner::RewardClient>> client =
      learner::RewardClient::Create(server->grpc_address(), absl::Seconds(30));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<v1::RewardInfo> info = (*client)->GetInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name(),
            python ? "python_example_exact_match" : "math_format_v2");
  EXPECT_EQ(info->component_weights().at("format"), 0.1);

  std::vector<learner::RewardItem> items = {
      {"a",
       "",
       "<think>2+2</think>\nSo \\boxed{4}.",
       "4",
       {{"dataset", "unit"}}},
      {"b", "", "<think>hmm</think> \\boxed{5}", "4", {}},
      {"c", "", "no think, \\boxed{4}", "$\\boxed{4}$", {}},
  };
  for (int i = 0; i < 5; ++i)
    items.push_back({absl::StrCat("x", i), "", "\\boxed{1}", "1", {}});
  absl::StatusOr<std::vector<learner::RewardResult>> results =
      (*client)->Score(items, /*batch_size=*/3);  // three requests
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), items.size());
  EXPECT_EQ((*results)[0].id, "a");
  EXPECT_TRUE((*results)[0].correct);
  EXPECT_DOUBLE_EQ((*results)[0].reward, 1.1);
  EXPECT_EQ((*results)[0].extracted_answer, "4");
  EXPECT_FALSE((*results)[1].correct);
  EXPECT_DOUBLE_EQ((*results)[1].reward, 0.1);
  EXPECT_THAT((*results)[1].reason, HasSubstr("5"));
  EXPECT_TRUE((*results)[2].correct);
  EXPECT_EQ((*results)[2].components.at("format"), 0.0);
  EXPECT_EQ((*results)[7].id, "x4");

  // The server's own refusals come back as statuses.
  const absl::StatusOr<std::vector<learner::RewardResult>> empty =
      (*client)->Score({});
  EXPECT_TRUE(empty.ok());  // nothing to send: no request made
  server->process->Signal(SIGTERM);
  const std::optional<ExitInfo> exit = server->process->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->exited && exit->code == 0) << server->process->Output();
  const absl::StatusOr<std::vector<learner::RewardResult>> after =
      (*client)->Score(items);
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable);
}

INSTANTIATE_TEST_SUITE_P(Implementations, CustomRewardTest,
                         ::testing::Values("python", "reward_service"));

}  // namespace
}  // namespace microrl::testing
