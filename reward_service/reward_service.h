#ifndef MICRORL_REWARD_SERVICE_REWARD_SERVICE_H_
#define MICRORL_REWARD_SERVICE_REWARD_SERVICE_H_

#include "absl/time/time.h"
#include "common/rpc/process_identity.h"
#include "proto/reward.grpc.pb.h"

namespace microrl::reward {

struct RewardServiceOptions {
  // Default time limit per scored item.
  absl::Duration item_deadline = absl::Seconds(5);
  // Largest accepted Score batch, items.
  int max_batch_items = 8192;
};

// The microrl.v1.Reward service. GetInfo reports the process and its limits.
// Score is not implemented yet (the answer checker comes with the reward
// issue), so it answers UNIMPLEMENTED. Thread-safe.
class RewardService final : public v1::Reward::Service {
 public:
  RewardService(const RewardServiceOptions& options,
                const rpc::ProcessIdentity& identity);

  grpc::Status GetInfo(grpc::ServerContext* context,
                       const v1::GetInfoRequest* request,
                       v1::RewardInfo* response) override;

 private:
  const RewardServiceOptions options_;
  const rpc::ProcessIdentity& identity_;
};

}  // namespace microrl::reward

#endif  // MICRORL_REWARD_SERVICE_REWARD_SERVICE_H_
