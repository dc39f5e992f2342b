#include "learner/learner_service.h"

namespace microrl::learner {

LearnerService::LearnerService(const LearnerServiceOptions& options,
                               const rpc::ProcessIdentity& identity,
                               const PeerMonitor& peers,
                               const TrainingStatus& status)
    : options_(options), identity_(identity), peers_(peers), status_(status) {}

grpc::Status LearnerService::GetInfo(grpc::ServerContext* context,
                                     const v1::GetInfoRequest* request,
                                     v1::LearnerInfo* response) {
  identity_.Fill(response->mutable_process());
  const TrainingStatus::View run = status_.Get();
  response->set_state(run.state);
  response->set_run_name(run.run_name);
  response->set_step(run.step);
  response->set_total_steps(run.total_steps);
  response->set_adapter_version(run.adapter_version);
  response->set_error(run.error);
  for (v1::PeerStatus& peer : peers_.Snapshot())
    *response->add_peers() = std::move(peer);
  response->set_device(options_.device.ToString());
  response->set_torch_version(device::TorchVersion());
  return grpc::Status::OK;
}

}  // namespace microrl::learner
