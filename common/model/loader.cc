#include "common/model/loader.h"

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"

namespace microrl::model {

at::Device TorchDevice(const device::Device& device) {
  return device.cuda ? at::Device(at::kCUDA, device.index)
                     : at::Device(at::kCPU);
}

absl::StatusOr<at::ScalarType> ParseDtype(const std::string& name,
                                          const device::Device& device,
                                          const std::string& setting) {
  if (name == "auto") return device.cuda ? at::kBFloat16 : at::kFloat;
  const std::optional<at::ScalarType> dtype = ValueOf(name, kDtypeNames);
  if (dtype.has_value()) return *dtype;
  return absl::InvalidArgumentError(
      absl::StrCat(setting, ": \"", name, "\" is not one of auto, ",
                   OwnNames(kDtypeNames, ", ", ", ")));
}

const char* DtypeName(at::ScalarType dtype) {
  return NameOf(dtype, kDtypeNames, "unknown");
}

absl::StatusOr<std::unique_ptr<Decoder>> LoadModel(
    const ModelLoadOptions& options) {
  absl::StatusOr<at::ScalarType> dtype =
      ParseDtype(options.dtype, options.device, options.dtype_setting);
  if (!dtype.ok()) return dtype.status();
  if (options.gpu_memory_gib < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.memory_setting, ": must be >= 0 (0: no cap)"));
  }
  if (options.gpu_memory_gib > 0) {
    const absl::Status capped = device::CapMemory(
        options.device,
        static_cast<uint64_t>(options.gpu_memory_gib * (1 << 30)));
    if (!capped.ok()) {
      return absl::Status(capped.code(), absl::StrCat(options.memory_setting,
                                                      ": ", capped.message()));
    }
    MRL_LOG(INFO) << "GPU memory capped at " << options.gpu_memory_gib
                  << " GiB";
  }
  DecoderOptions decoder_options;
  decoder_options.device = TorchDevice(options.device);
  decoder_options.dtype = *dtype;
  absl::StatusOr<std::unique_ptr<Decoder>> decoder =
      Decoder::Load(options.model_dir, decoder_options);
  if (!decoder.ok() && !options.model_setting.empty()) {
    return absl::Status(
        decoder.status().code(),
        absl::StrCat(options.model_setting, ": ", decoder.status().message()));
  }
  return decoder;
}

}  // namespace microrl::model
