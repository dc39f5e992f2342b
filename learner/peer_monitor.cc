#include "learner/peer_monitor.h"

#include "common/rpc/client.h"

namespace microrl::learner {

PeerMonitor::PeerMonitor(std::vector<Peer> peers, absl::Duration interval,
                         absl::Duration timeout, prometheus::Registry& registry)
    : peers_(std::move(peers)), interval_(interval), timeout_(timeout) {
  auto& up = prometheus::BuildGauge()
                 .Name("microrl_learner_peer_up")
                 .Help(
                     "1 if the peer's health service answered SERVING at the "
                     "last probe.")
                 .Register(registry);
  for (const Peer& peer : peers_) {
    std::shared_ptr<grpc::Channel> channel;
    if (!peer.address.empty()) {
      // Bad security files were refused at start-up; plaintext otherwise.
      absl::StatusOr<std::shared_ptr<grpc::Channel>> secure =
          rpc::MakeSecureChannel(peer.address, peer.security);
      channel = secure.ok() ? *secure : rpc::MakeChannel(peer.address);
    }
    channels_.push_back(channel);
    up_.push_back(&up.Add({{"role", peer.role}}));
    v1::PeerStatus status;
    status.set_role(peer.role);
    status.set_address(peer.address);
    status.set_health(peer.address.empty() ? v1::PEER_HEALTH_NOT_CONFIGURED
                                           : v1::PEER_HEALTH_UNSPECIFIED);
    status_.push_back(status);
  }
  if (interval_ > absl::ZeroDuration())
    thread_ = std::thread([this] { Run(); });
}

PeerMonitor::~PeerMonitor() { Stop(); }

void PeerMonitor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<v1::PeerStatus> PeerMonitor::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void PeerMonitor::ProbeAll() {
  for (size_t i = 0; i < peers_.size(); ++i) {
    if (channels_[i] == nullptr) continue;
    const absl::StatusOr<rpc::HealthStatus> health =
        rpc::CheckHealth(channels_[i], peers_[i].service, timeout_);
    v1::PeerHealth result = v1::PEER_HEALTH_UNREACHABLE;
    std::string detail;
    if (!health.ok()) {
      detail = std::string(health.status().message());
      // Any answer other than "nobody there" means the peer is up but not
      // serving this service.
      if (health.status().code() != absl::StatusCode::kUnavailable &&
          health.status().code() != absl::StatusCode::kDeadlineExceeded) {
        result = v1::PEER_HEALTH_NOT_SERVING;
      }
    } else if (*health == grpc::health::v1::HealthCheckResponse::SERVING) {
      result = v1::PEER_HEALTH_SERVING;
    } else {
      result = v1::PEER_HEALTH_NOT_SERVING;
      detail = rpc::HealthStatusName(*health);
    }
    up_[i]->Set(result == v1::PEER_HEALTH_SERVING ? 1.0 : 0.0);
    std::lock_guard<std::mutex> lock(mu_);
    status_[i].set_health(result);
    status_[i].set_detail(detail);
  }
}

void PeerMonitor::Run() {
  while (true) {
    ProbeAll();
    std::unique_lock<std::mutex> lock(mu_);
    wake_.wait_for(lock, absl::ToChronoMilliseconds(interval_),
                   [this] { return stopping_; });
    if (stopping_) return;
  }
}

}  // namespace microrl::learner
