#include "learner/learner_service.h"

namespace microrl::learner {

LearnerService::LearnerService(const LearnerServiceOptions& options,
                               const rpc::ProcessIdentity& identity,
                               const PeerMonitor& peers)
    : options_(options), identity_(identity), peers_(peers) {}

grpc::Status LearnerService::GetInfo(grpc::ServerContext* context,
                                     const v1::GetInfoRequest* request,
                                     v1::LearnerInfo* response) {
  identity_.Fill(response->mutable_process());
  response->set_state(v1::LEARNER_STATE_IDLE);
  for (v1::PeerStatus& peer : peers_.Snapshot())
    *response->add_peers() = std::move(peer);
  response->set_device(options_.device.ToString());
  response->set_torch_version(device::TorchVersion());
  return grpc::Status::OK;
}

}  // namespace microrl::learner
