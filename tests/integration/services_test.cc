// Starts the three real service binaries on loopback and talks to them as a
// user would: gRPC health and GetInfo, HTTP /metrics, `microrl status`,
// signals, bad flags.
#include <signal.h>
#include <unistd.h>

#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/client.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "proto/learner.grpc.pb.h"
#include "proto/reward.grpc.pb.h"
#include "proto/rollout.grpc.pb.h"
#include "tests/integration/launcher.h"
#include "tests/support/http.h"
#include "tests/support/subprocess.h"

namespace microrl::testing {
namespace {

using ::testing::HasSubstr;
using Health = grpc::health::v1::HealthCheckResponse;

class ServicesTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }

  RunningService Start(const std::string& binary, const std::string& name,
                       const std::vector<std::string>& args = {}) {
    absl::StatusOr<RunningService> service =
        StartService(binary, name, dir_, args);
    EXPECT_TRUE(service.ok()) << service.status();
    return service.ok() ? std::move(*service) : RunningService{};
  }

  // Sends `sig` and waits for a clean exit; returns the time it took.
  absl::Duration StopCleanly(RunningService& service, int sig,
                             const std::string& name) {
    const absl::Time start = absl::Now();
    service.process->Signal(sig);
    const std::optional<ExitInfo> exit =
        service.process->Wait(absl::Seconds(20));
    const absl::Duration took = absl::Now() - start;
    EXPECT_TRUE(exit.has_value()) << name << " did not stop:\n"
                                  << service.process->Output();
    if (exit.has_value()) {
      EXPECT_TRUE(exit->exited) << name << " killed by signal " << exit->signal;
      EXPECT_EQ(exit->code, 0) << service.process->Output();
    }
    EXPECT_THAT(service.process->Output(), HasSubstr("stopped in"));
    EXPECT_FALSE(WaitForFile(service.ready_file, absl::ZeroDuration()))
        << "ready file left behind";
    std::cout << name << " stopped " << absl::FormatDuration(took) << " after "
              << strsignal(sig) << "\n";
    RecordProperty(name + "_stop_ms",
                   static_cast<int>(absl::ToInt64Milliseconds(took)));
    return took;
  }

  RunResult Run(const std::vector<std::string>& argv) {
    absl::StatusOr<RunResult> result =
        RunToCompletion(argv, absl::StrCat(dir_, "/run.log"), absl::Minutes(1));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : RunResult{};
  }

  std::string dir_;
};

template <typename Stub, typename Info>
Info GetInfo(Stub& stub) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  Info info;
  const grpc::Status status =
      stub.GetInfo(&context, v1::GetInfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return info;
}

std::string Metrics(const RunningService& service) {
  absl::StatusOr<HttpResponse> response =
      HttpGet("127.0.0.1", service.ready.metrics_port, "/metrics");
  EXPECT_TRUE(response.ok()) << response.status();
  if (!response.ok()) return "";
  EXPECT_EQ(response->status, 200);
  return response->body;
}

TEST_F(ServicesTest, ThreeServicesServeHealthInfoAndMetricsThenStopOnSignals) {
  RunningService reward = Start(REWARD_SERVICE_BIN, "reward_service");
  RunningService rollout = Start(ROLLOUT_SERVER_BIN, "rollout_server");
  ASSERT_NE(reward.process, nullptr);
  ASSERT_NE(rollout.process, nullptr);
  RunningService learner = Start(LEARNER_BIN, "learner",
                                 {"--rollout_address=" + rollout.grpc_address(),
                                  "--reward_address=" + reward.grpc_address(),
                                  "--peer_probe_interval_ms=100"});
  ASSERT_NE(learner.process, nullptr);

  // Health: the whole server and each microrl service.
  for (const auto& [service, name] :
       {std::pair{&reward, "microrl.v1.Reward"},
        std::pair{&rollout, "microrl.v1.Rollout"},
        std::pair{&learner, "microrl.v1.Learner"}}) {
    auto channel = rpc::MakeChannel(service->grpc_address());
    for (const std::string& health_name : {std::string(), std::string(name)}) {
      const absl::StatusOr<rpc::HealthStatus> health =
          rpc::CheckHealth(channel, health_name, absl::Seconds(10));
      ASSERT_TRUE(health.ok()) << name << ": " << health.status();
      EXPECT_EQ(*health, Health::SERVING) << name;
    }
    EXPECT_EQ(service->ready.pid, service->process->pid());
  }

  // GetInfo.
  auto reward_stub =
      v1::Reward::NewStub(rpc::MakeChannel(reward.grpc_address()));
  const auto reward_info =
      GetInfo<v1::Reward::Stub, v1::RewardInfo>(*reward_stub);
  EXPECT_EQ(reward_info.process().component(), "reward_service");
  EXPECT_EQ(reward_info.process().pid(), reward.process->pid());
  EXPECT_EQ(reward_info.process().metrics_port(), reward.ready.metrics_port);
  EXPECT_EQ(reward_info.item_deadline_seconds(), 5.0);

  auto rollout_stub =
      v1::Rollout::NewStub(rpc::MakeChannel(rollout.grpc_address()));
  const auto rollout_info =
      GetInfo<v1::Rollout::Stub, v1::RolloutInfo>(*rollout_stub);
  EXPECT_EQ(rollout_info.process().component(), "rollout_server");
  EXPECT_EQ(rollout_info.state(), v1::ROLLOUT_STATE_NO_MODEL);
  EXPECT_EQ(rollout_info.device(), "cpu");
  EXPECT_FALSE(rollout_info.torch_version().empty());

  auto learner_stub =
      v1::Learner::NewStub(rpc::MakeChannel(learner.grpc_address()));
  v1::LearnerInfo learner_info;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {  // the learner probes its peers in the background
    learner_info = GetInfo<v1::Learner::Stub, v1::LearnerInfo>(*learner_stub);
    if (learner_info.peers_size() == 2 &&
        learner_info.peers(0).health() == v1::PEER_HEALTH_SERVING &&
        learner_info.peers(1).health() == v1::PEER_HEALTH_SERVING) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (absl::Now() < deadline);
  EXPECT_EQ(learner_info.state(), v1::LEARNER_STATE_IDLE);
  ASSERT_EQ(learner_info.peers_size(), 2);
  EXPECT_EQ(learner_info.peers(0).role(), "rollout");
  EXPECT_EQ(learner_info.peers(0).address(), rollout.grpc_address());
  EXPECT_EQ(learner_info.peers(0).health(), v1::PEER_HEALTH_SERVING);
  EXPECT_EQ(learner_info.peers(1).health(), v1::PEER_HEALTH_SERVING);

  // Without --model the rollout server refuses generation, saying why.
  {
    grpc::ClientContext context;
    v1::GenerateResponse response;
    const grpc::Status status =
        rollout_stub->Generate(&context, v1::GenerateRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(status.error_message(), HasSubstr("--model"));
  }

  // /metrics, including the calls just made.
  const std::string reward_metrics = Metrics(reward);
  EXPECT_THAT(
      reward_metrics,
      HasSubstr("microrl_build_info{component=\"reward_service\",version=\""));
  EXPECT_THAT(reward_metrics,
              HasSubstr("microrl_rpc_server_handled_total{code=\"OK\","
                        "method=\"/microrl.v1.Reward/GetInfo\"} 1"));
  const std::string rollout_metrics = Metrics(rollout);
  EXPECT_THAT(rollout_metrics,
              HasSubstr("microrl_build_info{component=\"rollout_server\""));
  EXPECT_THAT(
      rollout_metrics,
      HasSubstr("microrl_rpc_server_handled_total{code=\"FAILED_PRECONDITION\","
                "method=\"/microrl.v1.Rollout/Generate\"} 1"));
  const std::string learner_metrics = Metrics(learner);
  EXPECT_THAT(learner_metrics,
              HasSubstr("microrl_learner_peer_up{role=\"reward\"} 1"));
  EXPECT_THAT(learner_metrics,
              HasSubstr("microrl_learner_peer_up{role=\"rollout\"} 1"));

  // The command-line view of the same.
  const RunResult status =
      Run({MICRORL_BIN, "status", "--rollout=" + rollout.grpc_address(),
           "--reward=" + reward.grpc_address(),
           "--learner=" + learner.grpc_address()});
  EXPECT_TRUE(status.exit.exited && status.exit.code == 0) << status.output;
  EXPECT_THAT(status.output, HasSubstr("rollout  " + rollout.grpc_address()));
  EXPECT_THAT(status.output, HasSubstr("ROLLOUT_STATE_NO_MODEL"));
  EXPECT_THAT(status.output, HasSubstr("peers [rollout=PEER_HEALTH_SERVING"));

  // Stop: SIGTERM for two, SIGINT (Ctrl-C) for the learner.
  StopCleanly(learner, SIGINT, "learner");
  StopCleanly(rollout, SIGTERM, "rollout_server");
  StopCleanly(reward, SIGTERM, "reward_service");

  // With no reward service there, `microrl status` says so and fails.
  const ClosedPort closed;
  const RunResult down = Run(
      {MICRORL_BIN, "status",
       absl::StrCat("--reward=127.0.0.1:", closed.port()), "--timeout_ms=500"});
  EXPECT_TRUE(down.exit.exited && down.exit.code == 1) << down.output;
  EXPECT_THAT(down.output, HasSubstr("DOWN"));
  EXPECT_THAT(down.output, HasSubstr("not serving: reward"));
}

TEST_F(ServicesTest, BadFlagsAreRefusedWithAClearMessage) {
  // Exit code 2: a value microrl refuses; 1: absl's own parser refused it.
  struct Case {
    std::string binary;
    std::vector<std::string> args;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {REWARD_SERVICE_BIN,
       {"--port=70000"},
       2,
       "reward_service: --port=70000: must be in [0, 65535]"},
      {ROLLOUT_SERVER_BIN,
       {"--metrics_port=-1"},
       2,
       "rollout_server: --metrics_port=-1: must be"},
      {LEARNER_BIN,
       {"--port=9000", "--metrics_port=9000"},
       2,
       "they must differ"},
      {ROLLOUT_SERVER_BIN,
       {"--device=tpu"},
       2,
       "--device: unknown device \"tpu\""},
      {ROLLOUT_SERVER_BIN,
       {"--device=cuda:64"},
       2,
       "rollout_server: --device: device cuda:64"},
      {ROLLOUT_SERVER_BIN,
       {"--gpu_memory_gib=-1", "--model=/nonexistent"},
       2,
       "--gpu_memory_gib: must be >= 0"},
      {ROLLOUT_SERVER_BIN,
       {"--gpu_memory_gib=24", "--model=/nonexistent"},
       2,
       "--gpu_memory_gib: a GPU memory cap needs a CUDA device"},
      {LEARNER_BIN,
       {"--reward_address=localhost"},
       2,
       "--reward_address: bad address"},
      {LEARNER_BIN,
       {"--peer_probe_interval_ms=1"},
       2,
       "--peer_probe_interval_ms: must be >= 100"},
      {REWARD_SERVICE_BIN,
       {"--item_deadline_ms=0"},
       2,
       "--item_deadline_ms: must be positive"},
      {REWARD_SERVICE_BIN,
       {"--max_message_mb=0"},
       2,
       "--max_message_mb=0: must be in [1, 2047]"},
      {REWARD_SERVICE_BIN, {"serve"}, 2, "unexpected argument 'serve'"},
      {REWARD_SERVICE_BIN,
       {"--no_such_flag=1"},
       1,
       "Unknown command line flag 'no_such_flag'"},
      {LEARNER_BIN,
       {"--port=abc"},
       1,
       "Illegal value 'abc' specified for flag 'port'"},
      {MICRORL_BIN, {"frobnicate"}, 2, "unknown command 'frobnicate'"},
      {MICRORL_BIN,
       {"status"},
       2,
       "give at least one of --rollout, --reward, --learner"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {c.binary};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const RunResult result = Run(argv);
    EXPECT_TRUE(result.exit.exited) << c.binary;
    EXPECT_EQ(result.exit.code, c.code) << c.binary << " " << c.args[0];
    EXPECT_THAT(result.output, HasSubstr(c.message))
        << c.binary << " " << c.args[0];
  }
}

TEST_F(ServicesTest, HelpListsTheBinarysFlagsAndVersionPrintsIt) {
  for (const auto& [binary, flag] :
       {std::pair{REWARD_SERVICE_BIN, "--item_deadline_ms"},
        std::pair{ROLLOUT_SERVER_BIN, "--device"},
        std::pair{LEARNER_BIN, "--reward_address"},
        std::pair{MICRORL_BIN, "--timeout_ms"}}) {
    const RunResult help = Run({binary, "--help"});
    EXPECT_THAT(help.output, HasSubstr(flag)) << binary;
  }
  const RunResult version = Run({REWARD_SERVICE_BIN, "--version"});
  EXPECT_TRUE(version.exit.exited && version.exit.code == 0);
  EXPECT_THAT(version.output, HasSubstr("microrl "));
}

TEST_F(ServicesTest, PortInUseFailsAtStartWithTheAddress) {
  RunningService reward = Start(REWARD_SERVICE_BIN, "reward_service");
  ASSERT_NE(reward.process, nullptr);
  const RunResult grpc_taken =
      Run({ROLLOUT_SERVER_BIN, absl::StrCat("--port=", reward.ready.grpc_port),
           "--metrics_port=0"});
  EXPECT_TRUE(grpc_taken.exit.exited && grpc_taken.exit.code == 1)
      << grpc_taken.output;
  EXPECT_THAT(grpc_taken.output,
              HasSubstr("cannot serve gRPC on " + reward.grpc_address()));

  const RunResult metrics_taken =
      Run({LEARNER_BIN, "--port=0",
           absl::StrCat("--metrics_port=", reward.ready.metrics_port)});
  EXPECT_TRUE(metrics_taken.exit.exited && metrics_taken.exit.code == 1)
      << metrics_taken.output;
  EXPECT_THAT(metrics_taken.output,
              HasSubstr(absl::StrCat("cannot serve metrics on 127.0.0.1:",
                                     reward.ready.metrics_port)));
  StopCleanly(reward, SIGTERM, "reward_service");
}

}  // namespace
}  // namespace microrl::testing
