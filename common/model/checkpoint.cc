#include "common/model/checkpoint.h"

#include <sys/stat.h>

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/model/tensor_io.h"
#include "nlohmann/json.hpp"

namespace microrl::model {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// Adds every tensor of one safetensors file; `wanted` (if non-null) lists the
// names the index assigns to it, each of which must be present.
absl::Status AddFile(const std::string& path,
                     const std::set<std::string>* wanted,
                     std::map<std::string, at::Tensor>* out) {
  absl::StatusOr<std::shared_ptr<safetensors::SafetensorsFile>> file =
      safetensors::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  if (wanted != nullptr) {
    for (const std::string& name : *wanted) {
      if ((*file)->Find(name) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": the index lists tensor \"", name,
                         "\" here, but it is absent"));
      }
    }
  }
  for (const safetensors::TensorInfo& info : (*file)->tensors()) {
    absl::StatusOr<at::Tensor> tensor = TensorFromFile(*file, info);
    if (!tensor.ok()) return tensor.status();
    if (!out->emplace(info.name, *std::move(tensor)).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor \"", info.name, "\" also appears in another shard"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::map<std::string, at::Tensor>> OpenCheckpoint(
    const std::string& dir) {
  std::map<std::string, at::Tensor> tensors;
  const std::string single = dir + "/model.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (Exists(single)) {
    if (absl::Status s = AddFile(single, nullptr, &tensors); !s.ok()) return s;
    return tensors;
  }
  if (!Exists(index_path)) {
    return absl::NotFoundError(
        absl::StrCat(dir,
                     ": no model.safetensors or model.safetensors.index.json "
                     "(only safetensors checkpoints are supported)"));
  }
  absl::StatusOr<std::string> text = ReadFileToString(index_path);
  if (!text.ok()) return text.status();
  const nlohmann::json index = nlohmann::json::parse(*text, nullptr, false);
  if (index.is_discarded() || !index.is_object() ||
      !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": no \"weight_map\" object"));
  }
  std::map<std::string, std::set<std::string>> by_file;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": weight_map[\"", name, "\"] is not a file name"));
    }
    const std::string shard = file.get<std::string>();
    if (shard.empty() || absl::StrContains(shard, "/") ||
        absl::StrContains(shard, "..")) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": shard name \"", shard, "\" is not a plain file name"));
    }
    by_file[shard].insert(name);
  }
  for (const auto& [shard, names] : by_file) {
    if (absl::Status s = AddFile(dir + "/" + shard, &names, &tensors); !s.ok())
      return s;
  }
  return tensors;
}

}  // namespace microrl::model
