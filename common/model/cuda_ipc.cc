#include "common/model/cuda_ipc.h"

#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <cuda_runtime_api.h>

#include <exception>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/enum_names.h"
#include "nlohmann/json.hpp"

namespace microrl::model {
namespace {

using json = nlohmann::json;

constexpr int64_t kAlignment = 256;  // bytes; each weight starts on a multiple

// The dtypes an IPC adapter may have, by their safetensors names.
constexpr EnumName<at::ScalarType> kIpcDtypes[] = {
    {at::kBFloat16, "BF16"}, {at::kHalf, "F16"}, {at::kFloat, "F32"}};

void Synchronize(at::Device device) {
  at::accelerator::synchronizeDevice(device.index());
}

// How many bytes of the allocation that holds `pointer` follow it (the
// driver's cuMemGetAddressRange, reached through the runtime so that nothing
// links libcuda). Unimplemented when the driver cannot say.
absl::StatusOr<int64_t> MappedBytesFrom(const void* pointer) {
  using GetAddressRange =
      int (*)(unsigned long long*, size_t*, unsigned long long);
  static const GetAddressRange get_range = []() -> GetAddressRange {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &function,
                                         12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return nullptr;
    }
    return reinterpret_cast<GetAddressRange>(function);
  }();
  if (get_range == nullptr) {
    return absl::UnimplementedError(
        "CUDA IPC: the driver has no cuMemGetAddressRange to check the "
        "adapter's range with");
  }
  unsigned long long base = 0;
  size_t size = 0;
  const auto address = reinterpret_cast<unsigned long long>(pointer);
  if (const int rc = get_range(&base, &size, address); rc != 0) {
    return absl::UnimplementedError(absl::StrCat(
        "CUDA IPC: cuMemGetAddressRange failed (", rc, ") on the opened handle"));
  }
  return static_cast<int64_t>(base + size - address);
}

}  // namespace

std::string DeviceUuid(at::Device device) {
  if (!device.is_cuda()) return "";
  try {
    const cudaDeviceProp* properties =
        at::cuda::getDeviceProperties(device.index());
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    for (char c : properties->uuid.bytes) {
      const auto byte = static_cast<unsigned char>(c);
      hex.push_back(kHex[byte >> 4]);
      hex.push_back(kHex[byte & 15]);
    }
    return hex;
  } catch (const std::exception&) {
    return "";
  }
}

absl::StatusOr<IpcAdapter> ExportAdapter(const LoraAdapter& adapter,
                                         at::ScalarType dtype,
                                         at::Tensor& staging) {
  const char* dtype_name = NameOf(dtype, kIpcDtypes, nullptr);
  if (dtype_name == nullptr) {
    return absl::InvalidArgumentError(
        "CUDA IPC adapters are bfloat16, float16 or float32");
  }
  std::vector<std::pair<std::string, at::Tensor>> weights;
  for (int64_t layer = 0; layer < adapter.num_layers(); ++layer) {
    for (LoraModule module : adapter.config().targets) {
      const LoraLinear* linear = adapter.Find(layer, module);
      if (linear == nullptr) continue;
      weights.emplace_back(PeftTensorName(layer, module, true), linear->a);
      weights.emplace_back(PeftTensorName(layer, module, false), linear->b);
    }
  }
  if (weights.empty()) return absl::InvalidArgumentError("an empty adapter");
  const at::Device device = weights.front().second.device();
  if (!device.is_cuda()) {
    return absl::FailedPreconditionError(
        "CUDA IPC needs the adapter on a CUDA device");
  }
  const int64_t element = static_cast<int64_t>(c10::elementSize(dtype));
  json layout = json::object();
  std::vector<int64_t> begins;
  int64_t total = 0;
  for (const auto& [name, tensor] : weights) {
    total = (total + kAlignment - 1) / kAlignment * kAlignment;
    const int64_t bytes = tensor.numel() * element;
    layout[name] = {{"dtype", dtype_name},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {total, total + bytes}}};
    begins.push_back(total);
    total += bytes;
  }
  try {
    if (!staging.defined() || staging.numel() != total ||
        staging.device() != device) {
      staging = at::Tensor();  // the old buffer goes before the new one comes
      staging = at::empty({total},
                          at::TensorOptions().dtype(at::kByte).device(device));
    }
    c10::InferenceMode no_grad;
    for (size_t i = 0; i < weights.size(); ++i) {
      const at::Tensor& tensor = weights[i].second;
      staging.narrow(0, begins[i], tensor.numel() * element)
          .view(dtype)
          .view(tensor.sizes())
          .copy_(tensor.detach());
    }
    // The receiver reads from another process: everything must have landed.
    Synchronize(device);
    const c10::cuda::CUDACachingAllocator::ShareableHandle handle =
        c10::cuda::CUDACachingAllocator::shareIpcHandle(staging.data_ptr());
    IpcAdapter shared;
    shared.handle = handle.handle;
    shared.offset = static_cast<int64_t>(handle.offset);
    shared.bytes = total;
    shared.layout_json = layout.dump();
    shared.device_uuid = DeviceUuid(device);
    return shared;
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("exporting the adapter for CUDA IPC: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> ImportAdapter(
    const IpcAdapter& shared, const std::string& config_json,
    const ModelConfig& model, at::Device device, at::ScalarType dtype) {
  if (!device.is_cuda()) {
    return absl::UnimplementedError(
        "CUDA IPC: this server's model is on the CPU");
  }
  const std::string uuid = DeviceUuid(device);
  if (uuid.empty() || uuid != shared.device_uuid) {
    return absl::UnimplementedError(absl::StrCat(
        "CUDA IPC: the adapter is on GPU ", shared.device_uuid,
        ", this server's model on GPU ", uuid.empty() ? "(unknown)" : uuid));
  }
  auto invalid = [](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA IPC adapter: ", why));
  };
  if (shared.bytes <= 0 || shared.offset < 0 ||
      shared.offset > std::numeric_limits<int64_t>::max() - shared.bytes) {
    return invalid("bytes must be positive, offset non-negative, their sum "
                   "representable");
  }
  const json layout =
      json::parse(shared.layout_json, nullptr, /*allow_exceptions=*/false);
  if (layout.is_discarded() || !layout.is_object() || layout.empty()) {
    return invalid("the layout is not a non-empty JSON object");
  }
  struct Entry {
    std::string name;
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    int64_t begin;
  };
  std::vector<Entry> entries;
  for (const auto& [name, value] : layout.items()) {
    const std::string where = absl::StrCat("layout of \"", name, "\": ");
    if (!value.is_object() || !value.contains("dtype") ||
        !value["dtype"].is_string() || !value.contains("shape") ||
        !value["shape"].is_array() || !value.contains("data_offsets") ||
        !value["data_offsets"].is_array() ||
        value["data_offsets"].size() != 2) {
      return invalid(where + "wants dtype, shape and data_offsets [b, e]");
    }
    const std::optional<at::ScalarType> type =
        ValueOf(value["dtype"].get<std::string>(), kIpcDtypes);
    if (!type.has_value()) return invalid(where + "dtype is not BF16/F16/F32");
    const int64_t element = static_cast<int64_t>(c10::elementSize(*type));
    Entry entry{name, *type, {}, 0};
    int64_t count = 1;
    if (value["shape"].empty() || value["shape"].size() > 2) {
      return invalid(where + "shape must have 1 or 2 dimensions");
    }
    for (const json& dim : value["shape"]) {
      if (!dim.is_number_integer() || dim.get<int64_t>() <= 0 ||
          dim.get<int64_t>() > shared.bytes / element / count) {
        return invalid(where + "a dimension is not positive or does not fit");
      }
      entry.shape.push_back(dim.get<int64_t>());
      count *= entry.shape.back();  // <= bytes / element: no overflow
    }
    const json& offsets = value["data_offsets"];
    if (!offsets[0].is_number_integer() || !offsets[1].is_number_integer()) {
      return invalid(where + "data_offsets must be integers");
    }
    entry.begin = offsets[0].get<int64_t>();
    const int64_t end = offsets[1].get<int64_t>();
    if (entry.begin < 0 || end > shared.bytes || entry.begin % element != 0 ||
        end - entry.begin != count * element) {
      return invalid(where + "data_offsets do not fit the shape inside " +
                     std::to_string(shared.bytes) + " bytes");
    }
    entries.push_back(std::move(entry));
  }
  // Opened handles close when `base` goes: every copy from them must be done
  // by then, whatever happens below.
  std::shared_ptr<void> base;
  struct SyncBeforeClose {
    at::Device device;
    bool armed = false;
    ~SyncBeforeClose() {
      if (!armed) return;
      try {
        Synchronize(device);
      } catch (const std::exception&) {
      }
    }
  } sync{device};
  try {
    c10::DeviceGuard guard(device);
    base = c10::cuda::CUDACachingAllocator::getIpcDevPtr(shared.handle);
  } catch (const std::exception& e) {
    return absl::UnimplementedError(absl::StrCat(
        "CUDA IPC: cannot open the adapter's handle here: ", e.what()));
  }
  sync.armed = true;
  // The sender's offset and size are checked against the allocation really
  // mapped: nothing outside it is read.
  absl::StatusOr<int64_t> available = MappedBytesFrom(base.get());
  if (!available.ok()) return available.status();
  if (absl::Status s = CheckIpcRange(shared.offset, shared.bytes, *available);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::unique_ptr<LoraAdapter>> adapter;
  try {
    char* data = static_cast<char*>(base.get()) + shared.offset;
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const Entry& entry : entries) {
      tensors.emplace_back(
          entry.name,
          at::for_blob(data + entry.begin, entry.shape)
              .options(at::TensorOptions().dtype(entry.dtype).device(device))
              .target_device(device)
              .make_tensor());
    }
    adapter = LoraAdapter::FromTensors(config_json, tensors, "CUDA IPC adapter",
                                       model, device, dtype, /*copy=*/true);
    Synchronize(device);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("CUDA IPC: copying the adapter: ", e.what()));
  }
  // What is wrong with the adapter itself (e.g. a module FromTensors does not
  // support) is the request's fault, not IPC's: not UNIMPLEMENTED, which would
  // make the sender give up IPC.
  if (!adapter.ok() &&
      adapter.status().code() == absl::StatusCode::kUnimplemented) {
    return absl::InvalidArgumentError(adapter.status().message());
  }
  return adapter;
}

}  // namespace microrl::model
