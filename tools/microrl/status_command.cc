#include "tools/microrl/status_command.h"

#include <chrono>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/rpc/client.h"
#include "common/rpc/status.h"
#include "grpcpp/client_context.h"
#include "proto/learner.grpc.pb.h"
#include "proto/reward.grpc.pb.h"
#include "proto/rollout.grpc.pb.h"

namespace microrl::cli {
namespace {

std::string ProcessSummary(const v1::ProcessInfo& p) {
  return absl::StrFormat("%s %s pid %d up %.1fs metrics :%d", p.component(),
                         p.version(), p.pid(), p.uptime_seconds(),
                         p.metrics_port());
}

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(timeout));
}

// GetInfo of one service, summarised on one line.
using InfoFetcher = std::function<absl::StatusOr<std::string>(
    std::shared_ptr<grpc::Channel>, absl::Duration)>;

absl::StatusOr<std::string> RolloutSummary(
    std::shared_ptr<grpc::Channel> channel, absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  v1::RolloutInfo info;
  const grpc::Status status = v1::Rollout::NewStub(channel)->GetInfo(
      &context, v1::GetInfoRequest(), &info);
  if (!status.ok()) return rpc::FromGrpcStatus(status);
  return absl::StrCat(ProcessSummary(info.process()), " state ",
                      v1::RolloutState_Name(info.state()), " device ",
                      info.device(), " adapter v", info.adapter_version(),
                      " torch ", info.torch_version());
}

absl::StatusOr<std::string> RewardSummary(
    std::shared_ptr<grpc::Channel> channel, absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  v1::RewardInfo info;
  const grpc::Status status = v1::Reward::NewStub(channel)->GetInfo(
      &context, v1::GetInfoRequest(), &info);
  if (!status.ok()) return rpc::FromGrpcStatus(status);
  return absl::StrCat(ProcessSummary(info.process()), " item deadline ",
                      info.item_deadline_seconds(), "s");
}

absl::StatusOr<std::string> LearnerSummary(
    std::shared_ptr<grpc::Channel> channel, absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  v1::LearnerInfo info;
  const grpc::Status status = v1::Learner::NewStub(channel)->GetInfo(
      &context, v1::GetInfoRequest(), &info);
  if (!status.ok()) return rpc::FromGrpcStatus(status);
  std::vector<std::string> peers;
  for (const v1::PeerStatus& peer : info.peers()) {
    peers.push_back(
        absl::StrCat(peer.role(), "=", v1::PeerHealth_Name(peer.health())));
  }
  return absl::StrCat(ProcessSummary(info.process()), " state ",
                      v1::LearnerState_Name(info.state()), " device ",
                      info.device(), " step ", info.step(), " peers [",
                      absl::StrJoin(peers, " "), "]");
}

}  // namespace

absl::Status RunStatusCommand(const StatusCommandOptions& options,
                              std::ostream& out) {
  struct Target {
    const char* role;
    const std::string& address;
    const char* service;
    InfoFetcher fetch;
  };
  const std::vector<Target> targets = {
      {"rollout", options.rollout_address, "microrl.v1.Rollout",
       RolloutSummary},
      {"reward", options.reward_address, "microrl.v1.Reward", RewardSummary},
      {"learner", options.learner_address, "microrl.v1.Learner",
       LearnerSummary},
  };
  std::vector<std::string> not_serving;
  for (const Target& target : targets) {
    if (target.address.empty()) continue;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> secure =
        rpc::MakeSecureChannel(target.address, options.security);
    if (!secure.ok()) return secure.status();
    std::shared_ptr<grpc::Channel> channel = *secure;
    const absl::StatusOr<rpc::HealthStatus> health =
        rpc::CheckHealth(channel, target.service, options.timeout);
    std::string line =
        absl::StrFormat("%-8s %-21s ", target.role, target.address);
    if (!health.ok()) {
      absl::StrAppend(&line, "DOWN     ", health.status().message());
      not_serving.push_back(target.role);
    } else {
      absl::StrAppendFormat(&line, "%-8s ", rpc::HealthStatusName(*health));
      if (*health != grpc::health::v1::HealthCheckResponse::SERVING) {
        not_serving.push_back(target.role);
      }
      const absl::StatusOr<std::string> summary =
          target.fetch(channel, options.timeout);
      absl::StrAppend(&line, summary.ok()
                                 ? *summary
                                 : absl::StrCat("GetInfo failed: ",
                                                summary.status().message()));
    }
    out << line << "\n";
  }
  if (!not_serving.empty()) {
    return absl::UnavailableError(
        absl::StrCat("not serving: ", absl::StrJoin(not_serving, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace microrl::cli
