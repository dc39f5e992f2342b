#include "learner/checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/failpoint.h"
#include "common/base/file.h"
#include "common/base/logging.h"
#include "common/base/sha256.h"
#include "common/model/tensor_io.h"
#include "nlohmann/json.hpp"

namespace microrl::learner {
namespace fs = std::filesystem;

namespace {

constexpr char kManifest[] = "MANIFEST.json";

// step_* directories under root (not the .tmp ones of an interrupted save).
std::vector<std::string> StepDirectories(const std::string& root) {
  std::error_code error;
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, "step_") && !absl::EndsWith(name, ".tmp") &&
        entry.is_directory(error)) {
      found.push_back(entry.path().string());
    }
  }
  return found;
}

// Size and SHA-256 of a file, read in 4 MiB pieces.
absl::StatusOr<std::pair<int64_t, std::string>> SizeAndSha256(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  Sha256 hash;
  std::vector<char> buffer(4 << 20);
  int64_t size = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    hash.Update(absl::string_view(buffer.data(), static_cast<size_t>(n)));
    size += n;
  }
  return std::make_pair(size, hash.HexDigest());
}

// Every regular file under dir (paths relative to it), with size and SHA-256.
absl::StatusOr<nlohmann::json> DescribeFiles(const std::string& dir) {
  std::error_code error;
  std::vector<std::string> paths;
  for (const auto& entry : fs::recursive_directory_iterator(dir, error)) {
    if (entry.is_regular_file(error))
      paths.push_back(fs::relative(entry.path(), dir, error).string());
  }
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot list ", dir, ": ", error.message()));
  }
  std::sort(paths.begin(), paths.end());
  nlohmann::json files = nlohmann::json::array();
  for (const std::string& path : paths) {
    absl::StatusOr<std::pair<int64_t, std::string>> described =
        SizeAndSha256(dir + "/" + path);
    if (!described.ok()) return described.status();
    files.push_back({{"path", path},
                     {"bytes", described->first},
                     {"sha256", described->second}});
  }
  return files;
}

}  // namespace

std::string CheckpointDir(const std::string& root, int64_t step) {
  return absl::StrFormat("%s/step_%08d", root, step);
}

// Fault tests (kill@N): a power cut after the Nth write of a checkpoint, the
// N counted across the process's checkpoints (five per checkpoint: adapter,
// optimizer, state, manifest, rename).
constexpr char kWritePoint[] = "learner.checkpoint_write";

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
  if (absl::Status s = Failpoint(kWritePoint); !s.ok()) return s;
  model::NamedTensors moments;
  for (auto& [name, tensor] : optimizer.State())
    moments.emplace_back(name, tensor);
  if (absl::Status status =
          model::WriteTensors(tmp + "/optimizer.safetensors", moments);
      !status.ok()) {
    return status;
  }
  if (absl::Status s = Failpoint(kWritePoint); !s.ok()) return s;
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
  if (absl::Status s = Failpoint(kWritePoint); !s.ok()) return s;
  // The manifest last: its presence and match mean every file is complete.
  absl::StatusOr<nlohmann::json> files = DescribeFiles(tmp);
  if (!files.ok()) return files.status();
  const nlohmann::json manifest = {{"format", 1}, {"files", *files}};
  if (absl::Status status = WriteFileAtomically(tmp + "/" + kManifest,
                                                manifest.dump(1) + "\n");
      !status.ok()) {
    return status;
  }
  if (absl::Status s = Failpoint(kWritePoint); !s.ok()) return s;
  for (const std::string& sub : {tmp + "/adapter", tmp}) {
    if (absl::Status status = SyncDirectory(sub); !status.ok()) return status;
  }
  if (absl::Status status = RemoveTree(dir); !status.ok()) return status;
  fs::rename(tmp, dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", dir,
                                            ": ", error.message()));
  }
  if (absl::Status s = Failpoint(kWritePoint); !s.ok()) return s;
  const std::string root = fs::path(dir).parent_path().string();
  return SyncDirectory(root.empty() ? "." : root);
}

absl::Status VerifyCheckpoint(const std::string& dir) {
  absl::StatusOr<std::string> text = ReadFileToString(dir + "/" + kManifest);
  if (!text.ok()) {
    return absl::DataLossError(absl::StrCat(
        dir, ": no ", kManifest, " (torn, or written by an older microrl)"));
  }
  try {
    const nlohmann::json manifest = nlohmann::json::parse(*text);
    const nlohmann::json& files = manifest.at("files");
    if (!files.is_array() || files.empty())
      return absl::DataLossError(absl::StrCat(dir, "/", kManifest, ": no files"));
    for (const nlohmann::json& file : files) {
      const std::string path = file.at("path");
      if (path.empty() || path[0] == '/' || path.find("..") != std::string::npos)
        return absl::DataLossError(absl::StrCat(dir, ": bad path ", path));
      absl::StatusOr<std::pair<int64_t, std::string>> actual =
          SizeAndSha256(dir + "/" + path);
      if (!actual.ok()) {
        return absl::DataLossError(absl::StrCat(dir, "/", path, ": missing"));
      }
      if (actual->first != file.at("bytes").get<int64_t>()) {
        return absl::DataLossError(absl::StrCat(
            dir, "/", path, ": ", actual->first, " bytes, the manifest says ",
            file.at("bytes").get<int64_t>()));
      }
      if (actual->second != file.at("sha256").get<std::string>()) {
        return absl::DataLossError(
            absl::StrCat(dir, "/", path, ": SHA-256 differs from the manifest"));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(
        absl::StrCat(dir, "/", kManifest, ": ", e.what()));
  }
  return absl::OkStatus();
}

std::optional<std::string> LatestCheckpoint(const std::string& root,
                                            std::vector<std::string>* skipped) {
  std::vector<std::string> found = StepDirectories(root);
  std::sort(found.rbegin(), found.rend());
  for (const std::string& dir : found) {
    const absl::Status valid = VerifyCheckpoint(dir);
    if (valid.ok()) return dir;
    MRL_LOG(WARNING) << "skipping checkpoint " << dir << ": "
                     << valid.message();
    if (skipped != nullptr)
      skipped->push_back(std::string(valid.message()));
  }
  return std::nullopt;
}

bool HasCheckpointDirectories(const std::string& root) {
  return !StepDirectories(root).empty();
}

void PruneCheckpoints(const std::string& root, int64_t keep) {
  if (keep <= 0) return;
  std::vector<std::string> found = StepDirectories(root);
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
