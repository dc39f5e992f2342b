#include "common/model/tensor_io.h"

#include <ATen/ATen.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"

namespace microrl::model {

using safetensors::DType;

namespace {

// Safetensors dtypes and the LibTorch types that hold them, one to one.
struct DtypePair {
  DType dtype;
  at::ScalarType type;
};
constexpr DtypePair kDtypePairs[] = {
    {DType::kBool, at::kBool},      {DType::kU8, at::kByte},
    {DType::kI8, at::kChar},        {DType::kI16, at::kShort},
    {DType::kI32, at::kInt},        {DType::kI64, at::kLong},
    {DType::kF16, at::kHalf},       {DType::kBF16, at::kBFloat16},
    {DType::kF32, at::kFloat},      {DType::kF64, at::kDouble}};

}  // namespace

absl::StatusOr<at::ScalarType> ToScalarType(DType dtype) {
  for (const DtypePair& pair : kDtypePairs) {
    if (pair.dtype == dtype) return pair.type;
  }
  return absl::UnimplementedError(absl::StrCat(
      "dtype ", safetensors::DTypeName(dtype), " has no tensor type here"));
}

absl::StatusOr<DType> ToSafetensorsDType(at::ScalarType type) {
  for (const DtypePair& pair : kDtypePairs) {
    if (pair.type == type) return pair.dtype;
  }
  return absl::UnimplementedError(absl::StrCat(
      "tensor type ", c10::toString(type), " cannot be saved"));
}

absl::StatusOr<at::Tensor> TensorFromFile(
    const std::shared_ptr<safetensors::SafetensorsFile>& file,
    const safetensors::TensorInfo& info) {
  absl::StatusOr<at::ScalarType> type = ToScalarType(info.dtype);
  if (!type.ok()) {
    return absl::Status(type.status().code(),
                        absl::StrCat(file->label(), ": tensor \"", info.name,
                                     "\": ", type.status().message()));
  }
  void* data = const_cast<uint8_t*>(file->Data(info));
  const auto options = at::TensorOptions().dtype(*type).device(at::kCPU);
  const std::vector<int64_t> sizes(info.shape.begin(), info.shape.end());
  if (reinterpret_cast<uintptr_t>(data) % safetensors::DTypeSize(info.dtype) !=
      0) {
    return at::from_blob(data, sizes, options).clone();
  }
  std::shared_ptr<safetensors::SafetensorsFile> keep = file;
  return at::from_blob(
      data, sizes, [keep](void*) mutable { keep.reset(); }, options);
}

absl::StatusOr<std::string> SerializeTensors(
    const NamedTensors& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> host;  // keeps the CPU copies alive while serializing
  std::vector<safetensors::TensorView> views;
  host.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    absl::StatusOr<DType> dtype = ToSafetensorsDType(tensor.scalar_type());
    if (!dtype.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", name, "\": ", dtype.status().message()));
    }
    host.push_back(tensor.detach().to(at::kCPU).contiguous());
    views.push_back({name, *dtype,
                     std::vector<int64_t>(host.back().sizes().begin(),
                                          host.back().sizes().end()),
                     host.back().data_ptr()});
  }
  return safetensors::Serialize(views, metadata);
}

absl::Status WriteTensors(const std::string& path, const NamedTensors& tensors,
                          const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> bytes = SerializeTensors(tensors, metadata);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(path, *bytes);
}

absl::StatusOr<std::map<std::string, at::Tensor>> ReadTensors(
    const std::string& path) {
  absl::StatusOr<std::shared_ptr<safetensors::SafetensorsFile>> file =
      safetensors::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  std::map<std::string, at::Tensor> out;
  for (const safetensors::TensorInfo& info : (*file)->tensors()) {
    absl::StatusOr<at::Tensor> tensor = TensorFromFile(*file, info);
    if (!tensor.ok()) return tensor.status();
    out.emplace(info.name, *std::move(tensor));
  }
  return out;
}

template <typename T>
at::Tensor HostToDevice(const std::vector<T>& values, at::ScalarType dtype,
                        at::Device device) {
  TORCH_CHECK(c10::elementSize(dtype) == sizeof(T),
              "HostToDevice: element size mismatch");
  const bool cuda = device.is_cuda();
  at::Tensor host =
      at::empty({static_cast<int64_t>(values.size())},
                at::TensorOptions().dtype(dtype).pinned_memory(cuda));
  if (!values.empty())
    std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
  return cuda ? host.to(device, /*non_blocking=*/true) : host;
}

template at::Tensor HostToDevice(const std::vector<int64_t>&, at::ScalarType,
                                 at::Device);
template at::Tensor HostToDevice(const std::vector<int32_t>&, at::ScalarType,
                                 at::Device);
template at::Tensor HostToDevice(const std::vector<float>&, at::ScalarType,
                                 at::Device);
template at::Tensor HostToDevice(const std::vector<double>&, at::ScalarType,
                                 at::Device);
template at::Tensor HostToDevice(const std::vector<uint8_t>&, at::ScalarType,
                                 at::Device);

}  // namespace microrl::model
