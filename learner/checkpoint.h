#ifndef MICRORL_LEARNER_CHECKPOINT_H_
#define MICRORL_LEARNER_CHECKPOINT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/config.h"
#include "common/model/lora.h"
#include "learner/optimizer.h"

namespace microrl::learner {

// Where a run stands, besides the adapter and optimizer tensors. Every random
// choice of a run is a function of (seed, step): the data order of
// (seed, epoch), the rollout seed of (seed, step), the adapter's initial A of
// the seed; so the state below is all a resume needs.
struct TrainingState {
  int64_t step = 0;  // completed training steps
  int64_t optimizer_step =
      0;  // optimizer updates so far (the schedule's clock)
  uint64_t adapter_version = 0;
  int64_t data_epoch = 0;  // EpochSampler position
  int64_t data_offset = 0;
  uint64_t seed = 0;
  double elapsed_seconds = 0;  // training wall time so far, over all resumes
};

// A checkpoint directory: adapter/ (PEFT: adapter_config.json,
// adapter_model.safetensors), optimizer.safetensors (AdamW's moments),
// state.json (TrainingState) and, written last, MANIFEST.json (every other
// file with its size and SHA-256). Written into "<dir>.tmp", every file and
// directory fsynced, then renamed and the parent fsynced: when this returns OK
// the checkpoint survives a power loss; a checkpoint torn by one (or by a
// full disk) fails VerifyCheckpoint and is skipped on resume.
absl::Status SaveCheckpoint(const std::string& dir, const TrainingState& state,
                            const model::LoraAdapter& adapter,
                            const AdamW& optimizer,
                            const std::string& base_model);

// "<root>/step_<8 digits>" for `step`.
std::string CheckpointDir(const std::string& root, int64_t step);

// OK when `dir` holds a MANIFEST.json whose every file exists with its size
// and SHA-256; DataLoss naming the first thing that does not match.
absl::Status VerifyCheckpoint(const std::string& dir);

// The newest checkpoint under `root` that verifies, or nullopt. Newer step_*
// directories that do not verify are skipped; each is logged and, when
// `skipped` is given, appended to it as "<dir>: <why>".
std::optional<std::string> LatestCheckpoint(
    const std::string& root, std::vector<std::string>* skipped = nullptr);

// Whether `root` holds any step_* directory, complete or not.
bool HasCheckpointDirectories(const std::string& root);

// Deletes all but the `keep` newest checkpoints under `root` (keep 0: none).
void PruneCheckpoints(const std::string& root, int64_t keep);

struct LoadedCheckpoint {
  TrainingState state;
  std::unique_ptr<model::LoraAdapter> adapter;
};

// Reads a checkpoint for a model of shape `model`; the optimizer moments are
// loaded into `optimizer` by the caller (they need the adapter's parameters):
// see LoadOptimizerState.
absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& dir,
                                                const model::ModelConfig& model,
                                                at::Device device);
absl::Status LoadOptimizerState(const std::string& dir, int64_t optimizer_step,
                                AdamW& optimizer);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_CHECKPOINT_H_
