#ifndef MICRORL_LEARNER_TRAINER_H_
#define MICRORL_LEARNER_TRAINER_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/device/device.h"
#include "common/model/decoder.h"
#include "common/model/lora.h"
#include "learner/checkpoint.h"
#include "learner/config.h"
#include "learner/data.h"
#include "learner/optimizer.h"
#include "learner/policy_update.h"
#include "learner/reward_client.h"
#include "learner/rollout_client.h"
#include "learner/run_lock.h"
#include "learner/training_status.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace microrl::learner {

// The base model of a run on its device (model.device) and in its dtype
// (model.dtype; "auto": bfloat16 on a GPU, float32 on the CPU).
absl::StatusOr<std::unique_ptr<model::Decoder>> LoadTrainingDecoder(
    const TrainConfig& config);

// One training step's measurements, in the order they are logged.
using StepMetrics = nlohmann::ordered_json;

// The GRPO training loop. Each step is a story of named phases:
//   SamplePrompts -> Generate -> Score -> ComputeAdvantages -> Update ->
//   Publish -> Log (-> Checkpoint, Evaluate)
// against a rollout server and a reward service. Writes under
// output_dir/run_name: config.yaml (resolved), metrics.jsonl (one line per
// step, and per evaluation), checkpoints/step_N/, adapter/ (the final PEFT
// adapter).
class Trainer {
 public:
  // Loads the model, data and (with `resume`, from the newest checkpoint) the
  // training state; connects the clients. Refuses to overwrite a run that has
  // checkpoints unless `resume`.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(
      const TrainConfig& config, bool resume, prometheus::Registry& registry,
      TrainingStatus& status);

  // Trains until max_steps, the time budget, Stop() or an error; writes a
  // checkpoint at the end. OK when it stopped for any of the first three.
  absl::Status Run();

  // Asks Run() to stop soon (cancels calls in flight); thread-safe.
  void Stop();

  const TrainingState& state() const { return state_; }
  const std::string& run_dir() const { return run_dir_; }

 private:
  struct Rollouts;

  Trainer(const TrainConfig& config, prometheus::Registry& registry,
          TrainingStatus& status);

  // --- the phases of a step
  std::vector<const Problem*> SamplePrompts();
  absl::StatusOr<Rollouts> Generate(
      const std::vector<const Problem*>& problems);
  absl::Status Score(Rollouts& rollouts);
  std::vector<Sample> ComputeAdvantages(const Rollouts& rollouts,
                                        StepMetrics& metrics);
  absl::StatusOr<UpdateStats> Update(const std::vector<Sample>& samples);
  // Loads the adapter into the rollout server as state_.adapter_version + 1
  // (above any version another client loaded meanwhile).
  absl::Status Publish();
  absl::Status PublishVersion(uint64_t version);
  // Publishes the current adapter again to a rollout server that lost it (a
  // restart), waking it first if it is asleep.
  absl::Status Republish();
  // Sets the gauges and appends the step's line to metrics.jsonl.
  absl::Status Log(const StepMetrics& metrics, absl::Duration step_time);
  absl::Status Checkpoint();
  absl::Status Evaluate();

  absl::Status Step();
  void SetGauge(const std::string& name, double value);
  absl::Status AppendLog(const StepMetrics& line);

  const TrainConfig config_;
  prometheus::Registry& registry_;
  TrainingStatus& status_;
  std::string run_dir_;
  std::unique_ptr<RunLock> lock_;  // held while the trainer lives
  std::unique_ptr<model::Decoder> decoder_;
  std::unique_ptr<model::LoraAdapter> adapter_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<PolicyUpdater> updater_;
  std::unique_ptr<RolloutClient> rollout_;
  rpc::ClientSecurity reward_security_;  // for the final evaluation
  std::unique_ptr<RewardClient> reward_;
  std::unique_ptr<PromptBuilder> prompts_;
  std::vector<Problem> problems_;
  std::vector<Problem> eval_problems_;
  std::unique_ptr<EpochSampler> sampler_;
  TrainingState state_;
  int64_t checkpointed_step_ = -1;
  bool stepped_ = false;  // a step completed in this process
  // The weights changed without the step being committed (a failed update):
  // the state must not be checkpointed.
  bool dirty_ = false;
  bool rollout_asleep_ = false;
  device::Device device_;  // the decoder's, for memory queries
  // CUDA IPC publishing: the packed weights the rollout server copies from,
  // and whether IPC turned out unavailable (then gRPC from there on).
  at::Tensor ipc_staging_;
  bool ipc_unavailable_ = false;
  bool ipc_checked_ = false;  // the server's accepts_cuda_ipc was read
  std::atomic<bool> stop_{false};
  absl::Time started_;
  double elapsed_at_start_ = 0;
  std::map<std::string, prometheus::Gauge*> gauges_;
  prometheus::Counter* off_policy_counter_;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_TRAINER_H_
