#ifndef MICRORL_COMMON_MODEL_CHECKPOINT_H_
#define MICRORL_COMMON_MODEL_CHECKPOINT_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace microrl::model {

// Every tensor of a Hugging Face model directory, by checkpoint name, as CPU
// tensors viewing the memory-mapped files (no copies): model.safetensors, or
// the shards model.safetensors.index.json lists. Each tensor keeps its file
// mapped. Errors name the file: missing files, a malformed index or header, a
// tensor the index names but its shard lacks, the same tensor in two files.
absl::StatusOr<std::map<std::string, at::Tensor>> OpenCheckpoint(
    const std::string& dir);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_CHECKPOINT_H_
