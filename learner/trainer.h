#ifndef MICRORL_LEARNER_TRAINER_H_
#define MICRORL_LEARNER_TRAINER_H_

#include <atomic>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/base/thread_pool.h"
#include "common/device/device.h"
#include "common/distributed/communicator.h"
#include "common/model/decoder.h"
#include "common/model/lora.h"
#include "learner/adapter_publisher.h"
#include "learner/checkpoint.h"
#include "learner/config.h"
#include "learner/data.h"
#include "learner/data_parallel.h"
#include "learner/optimizer.h"
#include "learner/policy_update.h"
#include "learner/reward_client.h"
#include "learner/rollout_client.h"
#include "learner/rollout_pool.h"
#include "learner/run_log.h"
#include "learner/run_setup.h"
#include "learner/training_status.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace microrl::learner {

// The GRPO training loop. Each step is a story of named phases:
//   sample prompts -> Generate -> Score -> BuildSamples -> Update ->
//   Publish -> Log (-> Checkpoint, Evaluate)
// against a rollout server and a reward service. Writes under
// output_dir/run_name: config.yaml (resolved), metrics.jsonl (one line per
// step, and per evaluation), checkpoints/step_N/, adapter/ (the final PEFT
// adapter), eval/ (the final benchmarks, if any).
//
// Launched as data-parallel ranks (torchrun or Slurm; docs/scaling.md, Mode
// A), each rank runs this loop against its own rollout server (or, with
// rollout.addresses, servers shared by all ranks, to which rank 0 publishes) on
// its share of each step's prompts; the ranks exchange the step's rewards,
// all-reduce the
// gradients (PolicyUpdater's DataParallel) and agree after every phase, so
// that they take the same steps and stop together. Rank 0 alone writes the run
// directory (metrics.jsonl, checkpoints, the adapter) and sets the step
// gauges.
//
// With rollout.max_staleness k > 0 (docs/scaling.md, bounded staleness), the
// rollouts of the next steps are generated and scored on a thread of their
// own while the update runs: step n's with the adapter of step LagStep(n) >= n
// - 1 - k, pinned by version (the rollout servers keep k + 1 resident), so a
// run samples the same whatever the timing, and resumes exactly from its
// periodic checkpoints.
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
  const std::string& run_dir() const { return run_.path; }

 private:
  // A step's generated and scored groups (this rank's share of them).
  struct Rollouts {
    std::vector<const Problem*> problems;
    std::vector<CompletionGroup> groups;  // one per problem
    std::vector<std::string> prompt_texts;
    // Per completion (problem-major): reward, correctness, components.
    std::vector<RewardResult> scores;
    double generate_seconds = 0;
    double score_seconds = 0;
    // Completions refused for coming from another adapter version than the
    // learner's (then generated again).
    int64_t off_policy_refused = 0;
    // With several rollout servers: how the groups were spread.
    std::optional<RolloutPool::Dispatch> dispatch;
  };
  // A step whose rollouts are generated ahead (rollout.max_staleness > 0).
  struct Prefetch {
    int64_t step = 0;
    std::vector<const Problem*> problems;
    int64_t epoch = 0;       // the sampler's epoch when they were drawn
    int64_t data_epoch = 0;  // the sampler's position after its problems
    int64_t data_offset = 0;
    int64_t lag_step = 0;  // whose adapter generates them: this version
    uint64_t version = 0;
    std::shared_ptr<Rollouts> rollouts;  // filled once `done` is OK
    std::future<absl::Status> done;
  };

  Trainer(const TrainConfig& config, prometheus::Registry& registry,
          TrainingStatus& status);

  // --- Create's parts (once run_ is set): Start loads and connects.
  absl::Status Start();
  absl::Status LoadModelAndState();
  absl::Status LoadData();
  absl::Status Connect();

  // --- the phases of a step (trainer_rollouts.cc)
  // `first_prompt_index`: where `problems` start in the step's (seeding).
  absl::StatusOr<Rollouts> Generate(const std::vector<const Problem*>& problems,
                                    int64_t first_prompt_index);
  // Step `step`'s groups of `problems` (numbered from `first_prompt_index` in
  // the step's) from exactly adapter `version`; reads no training state (any
  // thread).
  absl::StatusOr<Rollouts> GenerateWith(
      const std::vector<const Problem*>& problems, int64_t first_prompt_index,
      int64_t step, uint64_t version);
  // The prompts' texts into `rollouts` and their token ids.
  absl::StatusOr<std::vector<PromptIds>> PreparePrompts(
      const std::vector<const Problem*>& problems, Rollouts& rollouts) const;
  absl::Status Score(Rollouts& rollouts);

  // --- bounded staleness (trainer_rollouts.cc)
  bool pipelined() const { return config_.max_staleness > 0; }
  // The step whose adapter generates step `step`: step - 1 - max_staleness,
  // but not before the last checkpoint_every multiple or the pipeline's start.
  int64_t LagStep(int64_t step) const;
  // Queues the generation of every step whose adapter is published.
  void FillPipeline();
  // Waits for the generation under way (the queued ones do not start) and
  // forgets them all.
  void DrainPipeline();
  // Starts over from the current step and adapter (run start, or rollout
  // servers that lost the versions): the sampler back to the state's position.
  void RestartPipeline();
  // The next step's prefetched rollouts, its problems and the sampler's
  // position after them; sets epoch, staleness, rollout_adapter_version and
  // rollout_wait_seconds in `m`.
  absl::StatusOr<Rollouts> TakePrefetched(std::vector<const Problem*>& problems,
                                          std::pair<int64_t, int64_t>& position,
                                          StepMetrics& m);
  // Loads the adapter into the rollout server as state_.adapter_version + 1
  // (above any version another client loaded meanwhile). Ranks sharing
  // rollout servers call it together: rank 0 loads (when `ready`, how its
  // preparation went, is OK) and every rank learns its version.
  absl::Status Publish(const absl::Status& ready = absl::OkStatus());
  // Data-parallel ranks sharing rollout.addresses' servers.
  bool shares_servers() const {
    return comm_ != nullptr && !config_.rollout_addresses.empty();
  }
  // Publishes the current adapter again to a rollout server that lost it (a
  // restart), waking it first if it is asleep.
  absl::Status Republish();
  // The adapter version rises above any a rollout server serves (`info` is
  // the first server's; with a pool, every server's).
  absl::Status RaiseToServedVersion(const v1::RolloutInfo& info);
  // Data parallel: every rank calls these; rank 0 saves or validates.
  absl::Status Checkpoint();
  absl::Status SaveOwnCheckpoint();
  absl::Status Evaluate();
  absl::Status Validate();
  // After the last step: the benchmarks of train.final_datasets.
  absl::Status FinalEvaluation();

  absl::Status Step();
  // Colocated: puts the rollout server to sleep before the update, outside
  // the uncommitted region, so a server that stays down fails the step with
  // the last completed one still savable.
  absl::Status SleepForUpdate();
  // Data parallel: every rank says how its phase went (`local`) and whether it
  // is stopping; returns `local`, or an Aborted if another rank failed, or a
  // Cancelled if one is stopping (then this one stops too). Alone: `local`.
  absl::Status AgreeOn(const absl::Status& local);
  // Whether the ranks can still run collectives (data parallel only).
  bool InSync() const;
  // The part of a step's `count` problems this rank generates (all, alone).
  Share MyShare(int64_t count) const;
  // Wakes the rollout server if this trainer put it to sleep.
  absl::Status EnsureAwake();

  const TrainConfig config_;
  // Data-parallel ranks' collectives (null when alone); rank 0 (or a lone
  // learner) is the lead: it writes the run directory.
  std::unique_ptr<distributed::Communicator> comm_;
  bool lead_ = true;
  // A rank failed between agreements (its peers may be elsewhere): no more
  // collectives.
  bool out_of_sync_ = false;
  bool agreed_failure_ = false;  // the last AgreeOn returned an error
  TrainingStatus& status_;
  RunDirectory run_;  // holds the run's lock while the trainer lives
  RunLog log_;
  std::unique_ptr<model::Decoder> decoder_;
  std::unique_ptr<model::LoraAdapter> adapter_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<PolicyUpdater> updater_;
  std::unique_ptr<RolloutClient> rollout_;  // the (first) rollout server
  // rollout.addresses' servers when several (Generate and Publish use all).
  std::unique_ptr<RolloutPool> pool_;
  // The pool's servers but the first (publisher_'s).
  std::vector<std::unique_ptr<AdapterPublisher>> pool_publishers_;
  std::unique_ptr<RewardClient> reward_;
  std::unique_ptr<AdapterPublisher> publisher_;
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
  std::atomic<bool> stop_{false};
  prometheus::Counter* off_policy_counter_;

  // --- bounded staleness: the adapter version published after each step
  // still needed, where the pipeline (re)started, the next step to queue, the
  // steps queued, and the thread generating them (last: it finishes its jobs
  // before the members they use go).
  std::map<int64_t, uint64_t> step_versions_;
  int64_t pipeline_start_ = 0;
  int64_t next_prefetch_ = 1;
  std::deque<Prefetch> prefetched_;
  std::atomic<bool> draining_{false};  // queued generations do not start
  std::unique_ptr<ThreadPool> prefetcher_;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_TRAINER_H_
