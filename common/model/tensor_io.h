#ifndef MICRORL_COMMON_MODEL_TENSOR_IO_H_
#define MICRORL_COMMON_MODEL_TENSOR_IO_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors/safetensors.h"

// Safetensors <-> at::Tensor.
namespace microrl::model {

absl::StatusOr<at::ScalarType> ToScalarType(safetensors::DType dtype);
absl::StatusOr<safetensors::DType> ToSafetensorsDType(at::ScalarType type);

// A CPU tensor over `info`'s bytes in `file`: a view of the mapping (no copy)
// when the data is aligned for its element type, else a copy. The tensor keeps
// `file` alive.
absl::StatusOr<at::Tensor> TensorFromFile(
    const std::shared_ptr<safetensors::SafetensorsFile>& file,
    const safetensors::TensorInfo& info);

// A 1-D tensor of `values` on `device`. On CUDA the values go through pinned
// host memory and are copied without blocking the host (a plain
// at::tensor(values).to(device) waits for the GPU's queue to drain, a host
// synchronization per call); the copy is ordered on the current stream before
// any kernel that uses the result. T is int64_t, int32_t, float, double or
// uint8_t, as `dtype` says.
template <typename T>
at::Tensor HostToDevice(const std::vector<T>& values, at::ScalarType dtype,
                        at::Device device);

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Serializes tensors (any device or layout; copied to contiguous CPU as
// needed).
absl::StatusOr<std::string> SerializeTensors(
    const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata = {});

// SerializeTensors to a file, atomically.
absl::Status WriteTensors(
    const std::string& path, const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Every tensor of a safetensors file, by name (views of the mapping).
absl::StatusOr<std::map<std::string, at::Tensor>> ReadTensors(
    const std::string& path);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_TENSOR_IO_H_
