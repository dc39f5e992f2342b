#include "learner/checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/file.h"
#include "common/model/tensor_io.h"
#include "nlohmann/json.hpp"

namespace microrl::learner {
namespace fs = std::filesystem;

std::string CheckpointDir(const std::string& root, int64_t step) {
  return absl::StrFormat("%s/step_%08d", root, step);
}

absl::Status SaveCheckpoint(const std::string& dir, const TrainingState& state,
                            const model::LoraAdapter& adapter,
                            const AdamW& optimizer,
                            const std::string& base_model) {
  const std::string tmp = dir + ".tmp";
  if (absl::Status status = RemoveTree(tmp); !status.ok()) return status;
  std::error_code error;
  fs::create_directories(tmp, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", tmp, ": ", error.message()));
  }
  if (absl::Status status = adapter.SavePeft(tmp + "/adapter", base_model);
      !status.ok()) {
    return status;
  }
  model::NamedTensors moments;
  for (auto& [name, tensor] : optimizer.State())
    moments.emplace_back(name, tensor);
  if (absl::Status status =
          model::WriteTensors(tmp + "/optimizer.safetensors", moments);
      !status.ok()) {
    return status;
  }
  const nlohmann::json json = {{"step", state.step},
                               {"optimizer_step", state.optimizer_step},
                               {"adapter_version", state.adapter_version},
                               {"data_epoch", state.data_epoch},
                               {"data_offset", state.data_offset},
                               {"seed", state.seed},
                               {"elapsed_seconds", state.elapsed_seconds}};
  if (absl::Status status =
          WriteFileAtomically(tmp + "/state.json", json.dump(1) + "\n");
      !status.ok()) {
    return status;
  }
  if (absl::Status status = RemoveTree(dir); !status.ok()) return status;
  fs::rename(tmp, dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", dir,
                                            ": ", error.message()));
  }
  return absl::OkStatus();
}

std::optional<std::string> LatestCheckpoint(const std::string& root) {
  std::error_code error;
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, "step_") && !absl::EndsWith(name, ".tmp") &&
        fs::exists(entry.path() / "state.json")) {
      found.push_back(entry.path().string());
    }
  }
  if (found.empty()) return std::nullopt;
  return *std::max_element(found.begin(), found.end());
}

void PruneCheckpoints(const std::string& root, int64_t keep) {
  if (keep <= 0) return;
  std::error_code error;
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, "step_") && !absl::EndsWith(name, ".tmp")) {
      found.push_back(entry.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) {
    (void)RemoveTree(found[i]);
  }
}

absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& dir,
                                                const model::ModelConfig& model,
                                                at::Device device) {
  absl::StatusOr<std::string> text = ReadFileToString(dir + "/state.json");
  if (!text.ok()) return text.status();
  LoadedCheckpoint loaded;
  try {
    const nlohmann::json json = nlohmann::json::parse(*text);
    loaded.state.step = json.at("step");
    loaded.state.optimizer_step = json.at("optimizer_step");
    loaded.state.adapter_version = json.at("adapter_version");
    loaded.state.data_epoch = json.at("data_epoch");
    loaded.state.data_offset = json.at("data_offset");
    loaded.state.seed = json.at("seed");
    loaded.state.elapsed_seconds = json.at("elapsed_seconds");
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(dir, "/state.json: ", e.what()));
  }
  absl::StatusOr<std::unique_ptr<model::LoraAdapter>> adapter =
      model::LoraAdapter::LoadPeft(dir + "/adapter", model, device);
  if (!adapter.ok()) return adapter.status();
  loaded.adapter = *std::move(adapter);
  return loaded;
}

absl::Status LoadOptimizerState(const std::string& dir, int64_t optimizer_step,
                                AdamW& optimizer) {
  absl::StatusOr<std::map<std::string, at::Tensor>> tensors =
      model::ReadTensors(dir + "/optimizer.safetensors");
  if (!tensors.ok()) return tensors.status();
  return optimizer.LoadState(*tensors, optimizer_step);
}

}  // namespace microrl::learner
