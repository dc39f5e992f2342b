#include "reward_service/reward_service.h"

namespace microrl::reward {

RewardService::RewardService(const RewardServiceOptions& options,
                             const rpc::ProcessIdentity& identity)
    : options_(options), identity_(identity) {}

grpc::Status RewardService::GetInfo(grpc::ServerContext* context,
                                    const v1::GetInfoRequest* request,
                                    v1::RewardInfo* response) {
  identity_.Fill(response->mutable_process());
  response->set_item_deadline_seconds(
      absl::ToDoubleSeconds(options_.item_deadline));
  response->set_max_batch_items(options_.max_batch_items);
  return grpc::Status::OK;
}

}  // namespace microrl::reward
