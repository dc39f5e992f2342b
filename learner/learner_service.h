#ifndef MICRORL_LEARNER_LEARNER_SERVICE_H_
#define MICRORL_LEARNER_LEARNER_SERVICE_H_

#include "common/device/device.h"
#include "common/rpc/process_identity.h"
#include "learner/peer_monitor.h"
#include "learner/training_status.h"
#include "proto/learner.grpc.pb.h"

namespace microrl::learner {

struct LearnerServiceOptions {
  // Device the learner computes on (validated at start-up).
  device::Device device;
};

// The microrl.v1.Learner service: GetInfo reports the training run's state
// and progress (from `status`; IDLE when no run is configured), the health of
// the rollout and reward peers (from `peers`), the device and the LibTorch
// version. Thread-safe.
class LearnerService final : public v1::Learner::Service {
 public:
  LearnerService(const LearnerServiceOptions& options,
                 const rpc::ProcessIdentity& identity, const PeerMonitor& peers,
                 const TrainingStatus& status);

  grpc::Status GetInfo(grpc::ServerContext* context,
                       const v1::GetInfoRequest* request,
                       v1::LearnerInfo* response) override;

 private:
  const LearnerServiceOptions options_;
  const rpc::ProcessIdentity& identity_;
  const PeerMonitor& peers_;
  const TrainingStatus& status_;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_LEARNER_SERVICE_H_
