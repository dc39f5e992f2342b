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

std::string Summary(const v1::RolloutInfo& info) {
  return absl::StrCat(ProcessSummary(info.process()), " state ",
                      v1::RolloutState_Name(info.state()), " device ",
                      info.device(), " adapter v", info.adapter_version(),
                      " torch ", info.torch_version());
}

std::string Summary(const v1::RewardInfo& info) {
  return absl::StrCat(ProcessSummary(info.process()), " item deadline ",
                      info.item_deadline_seconds(), "s");
}

std::string Summary(const v1::LearnerInfo& info) {
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

// GetInfo of one service (`Service`: v1::Rollout, v1::Reward or v1::Learner),
// summarised on one line.
template <typename Service, typename Info>
absl::StatusOr<std::string> InfoSummary(std::shared_ptr<grpc::Channel> channel,
                                        absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(timeout));
  Info info;
  const grpc::Status status =
      Service::NewStub(channel)->GetInfo(&context, v1::GetInfoRequest(), &info);
  if (!status.ok()) return rpc::FromGrpcStatus(status);
  return Summary(info);
}
using InfoFetcher = std::function<absl::StatusOr<std::string>(
    std::shared_ptr<grpc::Channel>, absl::Duration)>;

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
       InfoSummary<v1::Rollout, v1::RolloutInfo>},
      {"reward", options.reward_address, "microrl.v1.Reward",
       InfoSummary<v1::Reward, v1::RewardInfo>},
      {"learner", options.learner_address, "microrl.v1.Learner",
       InfoSummary<v1::Learner, v1::LearnerInfo>},
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
