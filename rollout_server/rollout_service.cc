#include "rollout_server/rollout_service.h"

namespace microrl::rollout {

RolloutService::RolloutService(const RolloutServiceOptions& options,
                               const rpc::ProcessIdentity& identity)
    : options_(options), identity_(identity) {}

grpc::Status RolloutService::GetInfo(grpc::ServerContext* context,
                                     const v1::GetInfoRequest* request,
                                     v1::RolloutInfo* response) {
  identity_.Fill(response->mutable_process());
  response->set_state(v1::ROLLOUT_STATE_NO_MODEL);
  response->set_device(options_.device.ToString());
  const device::MemoryInfo memory = device::QueryMemory(options_.device);
  response->set_memory_allocated_bytes(memory.allocated_bytes);
  response->set_memory_reserved_bytes(memory.reserved_bytes);
  response->set_device_memory_total_bytes(memory.total_bytes);
  response->set_torch_version(device::TorchVersion());
  return grpc::Status::OK;
}

}  // namespace microrl::rollout
