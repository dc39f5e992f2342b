#ifndef MICRORL_LEARNER_PEER_MONITOR_H_
#define MICRORL_LEARNER_PEER_MONITOR_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "common/rpc/security.h"
#include "grpcpp/channel.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "proto/learner.pb.h"

namespace microrl::learner {

// A service the learner depends on.
struct Peer {
  std::string role;              // "rollout" or "reward"
  std::string address;           // host:port; empty = not configured
  std::string service;           // gRPC service name whose health is probed
                                 // ("microrl.v1.Reward")
  rpc::ClientSecurity security;  // TLS and token, if the peer wants them
};

// Probes each peer's gRPC health service every `interval` on a background
// thread and keeps the latest result, also exported as
// microrl_learner_peer_up{role} (1 serving, 0 otherwise). Thread-safe; the
// destructor stops the thread promptly.
class PeerMonitor {
 public:
  PeerMonitor(std::vector<Peer> peers, absl::Duration interval,
              absl::Duration timeout, prometheus::Registry& registry);
  ~PeerMonitor();

  PeerMonitor(const PeerMonitor&) = delete;
  PeerMonitor& operator=(const PeerMonitor&) = delete;

  // Latest status of every peer, in construction order. Before the first probe
  // completes, configured peers read UNSPECIFIED.
  std::vector<v1::PeerStatus> Snapshot() const;

  // Probes every peer now (on the caller's thread) and records the results.
  void ProbeAll();

  // Stops the background thread (idempotent).
  void Stop();

 private:
  void Run();

  const std::vector<Peer> peers_;
  const absl::Duration interval_;
  const absl::Duration timeout_;
  std::vector<std::shared_ptr<grpc::Channel>>
      channels_;                        // one per peer; null if none
  std::vector<prometheus::Gauge*> up_;  // one per peer

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<v1::PeerStatus> status_;  // guarded by mu_
  bool stopping_ = false;               // guarded by mu_
  std::thread thread_;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_PEER_MONITOR_H_
