#ifndef MICRORL_COMMON_RPC_PROCESS_IDENTITY_H_
#define MICRORL_COMMON_RPC_PROCESS_IDENTITY_H_

#include <atomic>
#include <string>

#include "absl/time/time.h"
#include "proto/common.pb.h"

namespace microrl::rpc {

// What every GetInfo reports about the serving process (component, version,
// pid, uptime, metrics port). Thread-safe.
class ProcessIdentity {
 public:
  explicit ProcessIdentity(std::string component);

  const std::string& component() const { return component_; }

  // Set once the metrics endpoint is bound.
  void set_metrics_port(int port) { metrics_port_.store(port); }

  void Fill(v1::ProcessInfo* info) const;

 private:
  const std::string component_;
  const absl::Time start_;
  std::atomic<int> metrics_port_{0};
};

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_PROCESS_IDENTITY_H_
