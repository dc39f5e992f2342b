#ifndef MICRORL_COMMON_MODEL_LOADER_H_
#define MICRORL_COMMON_MODEL_LOADER_H_

#include <ATen/core/TensorBody.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/base/enum_names.h"
#include "common/device/device.h"
#include "common/model/decoder.h"

namespace microrl::model {

// The LibTorch device of a resolved device.
at::Device TorchDevice(const device::Device& device);

// The weights' dtypes by the names flags and configurations use.
inline constexpr EnumName<at::ScalarType> kDtypeNames[] = {
    {at::kFloat, "float32"}, {at::kBFloat16, "bfloat16"}, {at::kHalf, "float16"}};

// A dtype name: "auto" (bfloat16 on a GPU, float32 on the CPU) or one of
// kDtypeNames. Errors name `setting` (a flag or config key).
absl::StatusOr<at::ScalarType> ParseDtype(const std::string& name,
                                          const device::Device& device,
                                          const std::string& setting);

// "float32", "bfloat16", "float16" or "unknown".
const char* DtypeName(at::ScalarType dtype);

// How a service loads its base model.
struct ModelLoadOptions {
  std::string model_dir;  // Hugging Face layout
  device::Device device;
  std::string dtype = "auto";  // see ParseDtype
  // Cap on what the CUDA caching allocator may reserve, GiB (0: none).
  double gpu_memory_gib = 0;
  // How errors name the settings (flags for a server, keys for the learner);
  // model_setting "" leaves a load error as the loader gave it.
  std::string dtype_setting = "--dtype";
  std::string memory_setting = "--gpu_memory_gib";
  std::string model_setting = "--model";
};

// The one model loader of the rollout server, the learner and the CLI: parses
// the dtype, applies the memory cap, and loads the decoder onto its device.
absl::StatusOr<std::unique_ptr<Decoder>> LoadModel(
    const ModelLoadOptions& options);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_LOADER_H_
