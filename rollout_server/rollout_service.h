#ifndef MICRORL_ROLLOUT_SERVER_ROLLOUT_SERVICE_H_
#define MICRORL_ROLLOUT_SERVER_ROLLOUT_SERVICE_H_

#include "common/device/device.h"
#include "common/rpc/process_identity.h"
#include "proto/rollout.grpc.pb.h"

namespace microrl::rollout {

struct RolloutServiceOptions {
  // Device the model will run on (validated at start-up).
  device::Device device;
};

// The microrl.v1.Rollout service. Until the generation engine exists (rollout
// issue) the server holds no model: GetInfo reports state NO_MODEL with the
// device, its memory and the LibTorch version; Generate, LoadAdapter, Sleep and
// Wake answer UNIMPLEMENTED. Thread-safe.
class RolloutService final : public v1::Rollout::Service {
 public:
  RolloutService(const RolloutServiceOptions& options,
                 const rpc::ProcessIdentity& identity);

  grpc::Status GetInfo(grpc::ServerContext* context,
                       const v1::GetInfoRequest* request,
                       v1::RolloutInfo* response) override;

 private:
  const RolloutServiceOptions options_;
  const rpc::ProcessIdentity& identity_;
};

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_ROLLOUT_SERVICE_H_
