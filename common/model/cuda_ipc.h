#ifndef MICRORL_COMMON_MODEL_CUDA_IPC_H_
#define MICRORL_COMMON_MODEL_CUDA_IPC_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model/config.h"
#include "common/model/ipc_message.h"
#include "common/model/lora.h"

// Handing a LoRA adapter from one process to another on the same GPU through
// CUDA IPC: the sender packs its weights into one buffer of its own GPU memory
// and exports a handle to it; the receiver opens the handle, copies the
// weights device to device into its own adapter and closes it. No byte goes
// through the host. (The caching allocator's IPC support, as
// torch.multiprocessing uses it.)
namespace microrl::model {

// The GPU's UUID as 32 lowercase hex digits; "" for the CPU or a device that
// cannot say.
std::string DeviceUuid(at::Device device);

// Packs `adapter`'s weights, cast to `dtype`, into `staging` (kept by the
// caller and reused while the adapter's size stays the same) and exports it.
// The adapter must be on a CUDA device. The packed weights are complete when
// this returns (the device is synchronized), and stay valid while `staging`
// lives unchanged: the receiver must have copied them before the next call.
absl::StatusOr<IpcAdapter> ExportAdapter(const LoraAdapter& adapter,
                                         at::ScalarType dtype,
                                         at::Tensor& staging);

// Opens `shared` (exported by another process on the same GPU), checks it as
// LoraAdapter::FromTensors does (and its layout: dtypes, shapes, offsets
// inside `bytes`; `offset` and `bytes` inside the allocation really mapped,
// CheckIpcRange), and copies the weights into a new adapter on `device` in
// `dtype`. Unimplemented when this process's device is not the sender's GPU
// (the CPU, another GPU) or the handle cannot be opened here (another host or
// container): the caller then sends the bytes another way. InvalidArgument
// for a bad layout or adapter.
absl::StatusOr<std::unique_ptr<LoraAdapter>> ImportAdapter(
    const IpcAdapter& shared, const std::string& config_json,
    const ModelConfig& model, at::Device device, at::ScalarType dtype);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_CUDA_IPC_H_
