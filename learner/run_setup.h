#ifndef MICRORL_LEARNER_RUN_SETUP_H_
#define MICRORL_LEARNER_RUN_SETUP_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/decoder.h"
#include "common/model/lora.h"
#include "learner/benchmarks.h"
#include "learner/checkpoint.h"
#include "learner/config.h"
#include "learner/data.h"
#include "learner/evaluate.h"
#include "learner/optimizer.h"
#include "learner/policy_update.h"
#include "learner/reward_client.h"
#include "learner/rollout_client.h"
#include "learner/rollout_pool.h"
#include "learner/run_lock.h"
#include "learner/samples.h"

// What every training command (GRPO's trainer, SFT) sets up from its
// configuration before its first step: the run directory, the model, the
// adapter and the optimizer's options.
namespace microrl::learner {

// The base model of a run on its device (model.device) and in its dtype
// (model.dtype; "auto": bfloat16 on a GPU, float32 on the CPU), under
// model.gpu_memory_gib.
absl::StatusOr<std::unique_ptr<model::Decoder>> LoadTrainingDecoder(
    const TrainConfig& config);

// The adapter shape lora.* asks for.
absl::StatusOr<model::LoraConfig> LoraConfigFrom(const TrainConfig& config);

// A resumed or initial adapter must have the shape the configuration asks for;
// `source` names where it came from.
absl::Status CheckAdapterShape(const model::LoraAdapter& adapter,
                               const TrainConfig& config,
                               const std::string& source);

// A run's adapter at its start, trainable: lora.init's PEFT adapter (its shape
// checked against lora.*) or a new one seeded with run.seed.
absl::StatusOr<std::unique_ptr<model::LoraAdapter>> CreateOrLoadAdapter(
    const TrainConfig& config, const model::Decoder& decoder);

// The learning-rate schedule of optim.* over `total_steps` optimizer steps.
ScheduleOptions ScheduleFrom(const TrainConfig& config, int64_t total_steps);

// The GRPO update's options (loss.*, optim.*, the rollout temperature).
absl::StatusOr<UpdateOptions> UpdateOptionsFrom(const TrainConfig& config);

// The adapter and training state of checkpoint `dir`, trainable, for a run of
// `config`: refused when it was trained with another run.seed or holds another
// LoRA shape.
absl::StatusOr<LoadedCheckpoint> ResumeFrom(const std::string& dir,
                                            const TrainConfig& config,
                                            const model::Decoder& decoder);

// What a GRPO run trains, on its device: the base model, the adapter and its
// optimizer, with the training state they are at.
struct TrainingModel {
  std::unique_ptr<model::Decoder> decoder;
  std::unique_ptr<model::LoraAdapter> adapter;
  std::unique_ptr<AdamW> optimizer;
  TrainingState state;  // a new run's: step 0 and run.seed
};

// Loads the model and, from `checkpoint` (if any, see ResumeFrom), the
// adapter, optimizer moments and state; else a new or lora.init adapter.
absl::StatusOr<TrainingModel> LoadTrainingModel(
    const TrainConfig& config, const std::optional<std::string>& checkpoint);

// The clients of a run's peers: every call retried while a peer is down for up
// to its max_wait_s, with the TLS and token of rollout.*/reward.* (or of
// MICRORL_AUTH_TOKEN and MICRORL_TLS_CA).
struct PeerClients {
  // rollout.address's server, or rollout.addresses' first.
  std::unique_ptr<RolloutClient> rollout;
  // Every server of rollout.addresses when it names several, else null.
  std::unique_ptr<RolloutPool> pool;
  // The rollout servers' addresses (rollout.address, or rollout.addresses
  // with dns: names resolved); `rollout` is the first's.
  std::vector<std::string> rollout_addresses;
  std::unique_ptr<RewardClient> reward;
};
absl::StatusOr<PeerClients> ConnectPeers(const TrainConfig& config);

// The benchmarks of train.final_datasets, written to <run_dir>/eval.
BenchmarkOptions FinalBenchmarkOptions(const TrainConfig& config,
                                       const std::string& run_dir);

// How a step's completions become samples (algorithm.advantage*,
// algorithm.filter_zero_variance).
SampleOptions SampleOptionsFrom(const TrainConfig& config);

// The sampling of step `step` (1-based): the run's settings, a seed of the run
// seed and the step, prompts numbered from `first_prompt_index`.
GenerateParams StepGenerateParams(const TrainConfig& config, int64_t step,
                                  int64_t first_prompt_index);

// The periodic validation: greedy pass@1 on eval.path's problems, of adapter
// `version`.
EvalOptions ValidationOptions(const TrainConfig& config, uint64_t version);

// A run's problems and its prompt template.
struct RunData {
  std::vector<Problem> train;  // data.train
  std::vector<Problem> eval;   // eval.path's first eval.problems ones
  std::unique_ptr<PromptBuilder> prompts;
};
absl::StatusOr<RunData> LoadRunData(const TrainConfig& config);

// A GRPO run's directory (output_dir/run_name), opened for training.
struct RunDirectory {
  std::string path;
  // The newest checkpoint that verifies (with --resume), if any.
  std::optional<std::string> latest_checkpoint;
  std::unique_ptr<RunLock> lock;  // one learner per run directory
};

// Creates and locks the run directory and writes config.yaml. Refuses to
// overwrite a run that has checkpoints unless `resume`; with `resume`, refuses
// a run whose checkpoints all fail to verify, and a configuration change that
// breaks exact resume (seed, model, data, prompts and group size, LoRA shape),
// logging any other change.
absl::StatusOr<RunDirectory> OpenRunDirectory(const TrainConfig& config,
                                              bool resume);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_RUN_SETUP_H_
