#ifndef MICRORL_COMMON_MODEL_IPC_MESSAGE_H_
#define MICRORL_COMMON_MODEL_IPC_MESSAGE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace microrl::model {

// A LoRA adapter in another process's GPU memory, as CUDA IPC hands it over
// (common/model/cuda_ipc.h makes and opens them). Torch-free, so gRPC code
// can carry it.
struct IpcAdapter {
  std::string handle;  // the allocator's shareable handle (opaque bytes)
  int64_t offset = 0;  // of the packed weights in the shared allocation
  int64_t bytes = 0;   // of the packed weights
  // Where each weight is in the packed bytes, as a safetensors header:
  // {"<PEFT name>": {"dtype": "BF16", "shape": [r, in], "data_offsets": [b,
  // e]}}.
  std::string layout_json;
  std::string device_uuid;  // of the sender's GPU (DeviceUuid)
};

// The receiver's check of what the sender claims: `bytes` from `offset` must
// lie inside the opened allocation, of which `available` bytes follow the
// pointer the handle opened at. InvalidArgument with the figures otherwise
// (never an overflow: any int64 values are safe).
absl::Status CheckIpcRange(int64_t offset, int64_t bytes, int64_t available);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_IPC_MESSAGE_H_
