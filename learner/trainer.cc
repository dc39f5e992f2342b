#include "learner/trainer.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/base/failpoint.h"
#include "common/base/logging.h"
#include "common/base/sha256.h"
#include "learner/benchmarks.h"
#include "learner/data_parallel.h"
#include "learner/samples.h"

namespace microrl::learner {

Trainer::Trainer(const TrainConfig& config, prometheus::Registry& registry,
                 TrainingStatus& status)
    : config_(config),
      status_(status),
      log_(config.output_dir + "/" + config.run_name, registry),
      off_policy_counter_(
          &prometheus::BuildCounter()
               .Name("microrl_learner_off_policy_completions_total")
               .Help("Completions refused because another adapter version "
                     "than the learner's produced them.")
               .Register(registry)
               .Add({})) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(
    const TrainConfig& config, bool resume, prometheus::Registry& registry,
    TrainingStatus& status) {
  absl::StatusOr<distributed::LaunchEnv> launch =
      config.distributed_enabled ? distributed::ReadLaunchEnv()
                                 : distributed::LaunchEnv{};
  if (!launch.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the launcher's environment: ", launch.status().message(),
                     " (distributed.enabled=false runs alone)"));
  }
  if (!launch->distributed()) {
    std::unique_ptr<Trainer> t(new Trainer(config, registry, status));
    absl::StatusOr<RunDirectory> run = OpenRunDirectory(config, resume);
    if (!run.ok()) return run.status();
    t->run_ = *std::move(run);
    if (absl::Status s = t->Start(); !s.ok()) return s;
    return t;
  }
  // Data parallel: this rank's device, rollout server and collectives; rank 0
  // opens the run directory for all.
  absl::StatusOr<RankSetup> rank = JoinRanks(config, *launch);
  if (!rank.ok()) return rank.status();
  std::unique_ptr<Trainer> t(new Trainer(rank->config, registry, status));
  t->comm_ = std::move(rank->comm);
  t->lead_ = launch->rank == 0;
  absl::StatusOr<RunDirectory> run =
      OpenSharedRunDirectory(*t->comm_, config, resume);
  if (!run.ok()) return run.status();
  t->run_ = *std::move(run);
  if (absl::Status s = t->Start(); !s.ok()) return s;
  return t;
}

absl::Status Trainer::Start() {
  if (absl::Status s = LoadModelAndState(); !s.ok()) return s;
  if (absl::Status s = LoadData(); !s.ok()) return s;
  if (absl::Status s = Connect(); !s.ok()) return s;
  if (pipelined()) prefetcher_ = std::make_unique<ThreadPool>(1);
  // The metric series continues where the checkpoint left it.
  if (lead_) {
    if (absl::Status s = log_.KeepUpTo(state_.step); !s.ok()) return s;
  }
  status_.Update([&](TrainingStatus::View& v) {
    v.state = v1::LEARNER_STATE_WAITING_FOR_PEERS;
    v.run_name = config_.run_name;
    v.step = state_.step;
    v.total_steps = config_.max_steps;
    v.adapter_version = state_.adapter_version;
  });
  if (lead_) MRL_LOG(INFO) << "configuration:\n" << TrainConfigToYaml(config_);
  return absl::OkStatus();
}

absl::Status Trainer::LoadModelAndState() {
  absl::StatusOr<TrainingModel> loaded =
      LoadTrainingModel(config_, run_.latest_checkpoint);
  if (!loaded.ok()) return loaded.status();
  decoder_ = std::move(loaded->decoder);
  adapter_ = std::move(loaded->adapter);
  optimizer_ = std::move(loaded->optimizer);
  state_ = loaded->state;
  if (run_.latest_checkpoint.has_value()) {
    checkpointed_step_ = state_.step;
    MRL_LOG(INFO) << "resuming " << run_.path << " from "
                  << *run_.latest_checkpoint << " (step " << state_.step << ")";
  }
  absl::StatusOr<UpdateOptions> update = UpdateOptionsFrom(config_);
  if (!update.ok()) return update.status();
  const at::Device device = decoder_->options().device;
  device_ = {device.is_cuda(), device.is_cuda() ? device.index() : 0};
  updater_ = std::make_unique<PolicyUpdater>(*decoder_, *adapter_, *optimizer_,
                                             *update);
  return absl::OkStatus();
}

absl::Status Trainer::LoadData() {
  absl::StatusOr<RunData> data = LoadRunData(config_);
  if (!data.ok()) return data.status();
  sampler_ = std::make_unique<EpochSampler>(
      static_cast<int64_t>(data->train.size()), config_.seed);
  sampler_->Seek(state_.data_epoch, state_.data_offset);
  problems_ = std::move(data->train);
  eval_problems_ = std::move(data->eval);
  prompts_ = std::move(data->prompts);
  return absl::OkStatus();
}

absl::Status Trainer::Connect() {
  absl::StatusOr<PeerClients> peers = ConnectPeers(config_);
  if (!peers.ok()) return peers.status();
  rollout_ = std::move(peers->rollout);
  reward_ = std::move(peers->reward);
  pool_ = std::move(peers->pool);
  PublishOptions publish;
  publish.model_path = config_.model_path;
  publish.via = config_.publish_via;
  publish.dtype = config_.publish_dtype;
  publish.rollout_address = peers->rollout_addresses[0];
  publish.keep_versions = static_cast<uint32_t>(config_.max_staleness + 1);
  auto publisher_for = [&](RolloutClient& client) {
    return std::make_unique<AdapterPublisher>(
        client, *adapter_, decoder_->options().dtype,
        decoder_->options().device.is_cuda(), publish);
  };
  if (shares_servers()) {
    // Rank 0 publishes to the servers each rank sends its groups to.
    if (absl::Status s = SameOnEveryRank(
            *comm_, Sha256Hex(absl::StrJoin(peers->rollout_addresses, ",")),
            "rollout server addresses (rollout.addresses, resolved)");
        !s.ok()) {
      return s;
    }
  }
  publisher_ = publisher_for(*rollout_);
  for (size_t i = 1; pool_ != nullptr && i < pool_->size(); ++i) {
    publish.rollout_address = pool_->address(i);
    pool_publishers_.push_back(publisher_for(pool_->server(i)));
  }
  return absl::OkStatus();
}

void Trainer::Stop() {
  stop_ = true;
  // Every call and every wait for a peer ends at once. An update ends at its
  // next micro-batch if it has not taken an optimizer step yet, else runs to
  // its end (then the step commits); either way the state saved at the end is
  // a completed step's.
  if (rollout_ != nullptr) rollout_->Cancel();
  if (pool_ != nullptr) pool_->Cancel();
  if (reward_ != nullptr) reward_->Cancel();
}

absl::Status Trainer::EnsureAwake() {
  if (!rollout_asleep_) return absl::OkStatus();
  absl::StatusOr<v1::WakeResponse> woke = rollout_->Wake();
  if (!woke.ok()) return woke.status();
  rollout_asleep_ = false;
  return absl::OkStatus();
}

absl::Status Trainer::Publish(const absl::Status& ready) {
  absl::Status published = ready;
  // Fault tests: a publish that fails after the step committed.
  if (published.ok()) published = Failpoint("learner.publish");
  if (published.ok() && (lead_ || !shares_servers())) {
    published =
        PublishToAll(*publisher_, pool_publishers_, &state_.adapter_version);
  }
  if (shares_servers() && InSync()) {
    absl::StatusOr<uint64_t> version =
        ShareVersion(*comm_, state_.adapter_version, published);
    published = version.status();
    if (version.ok()) state_.adapter_version = *version;
  }
  if (published.ok()) {
    status_.Update([&](TrainingStatus::View& v) {
      v.adapter_version = state_.adapter_version;
    });
  }
  return published;
}

absl::Status Trainer::Checkpoint() {
  if (comm_ != nullptr && InSync()) {
    // The replicas are equal, or no rank saves; then rank 0 saves for all.
    if (absl::Status s = CheckReplicasEqual(*comm_, *adapter_); !s.ok()) {
      return s;
    }
  }
  absl::Status saved = absl::OkStatus();
  if (lead_) saved = SaveOwnCheckpoint();
  if (saved.ok()) checkpointed_step_ = state_.step;
  return AgreeOn(saved);
}

absl::Status Trainer::SaveOwnCheckpoint() {
  const std::string root = run_.path + "/checkpoints";
  // The log lines of the steps it holds are on disk before it is: a power cut
  // cannot leave a checkpoint whose steps have no line.
  if (absl::Status s = log_.Sync(); !s.ok()) return s;
  if (absl::Status s =
          SaveCheckpoint(CheckpointDir(root, state_.step), state_, *adapter_,
                         *optimizer_, config_.model_path);
      !s.ok()) {
    return s;
  }
  PruneCheckpoints(root, config_.keep_checkpoints);
  MRL_LOG(INFO) << "checkpoint at step " << state_.step;
  return absl::OkStatus();
}

absl::Status Trainer::Evaluate() {
  absl::Status done = lead_ ? Validate() : absl::OkStatus();
  if (comm_ == nullptr) return done;
  // The other ranks wait (longer than a collective may) while rank 0
  // validates.
  if (InSync()) {
    if (absl::Status s =
            comm_->Barrier(absl::Seconds(config_.distributed_eval_wait_s));
        !s.ok()) {
      return s;
    }
  }
  return AgreeOn(done);
}

absl::Status Trainer::Validate() {
  status_.Update(
      [](TrainingStatus::View& v) { v.state = v1::LEARNER_STATE_EVALUATING; });
  const EvalOptions options =
      ValidationOptions(config_, state_.adapter_version);
  const absl::Time start = absl::Now();
  if (absl::Status s = EnsureAwake(); !s.ok()) return s;
  absl::StatusOr<EvalResult> result = learner::Evaluate(
      "validation", eval_problems_, *prompts_, *rollout_, *reward_, options);
  status_.Update(
      [](TrainingStatus::View& v) { v.state = v1::LEARNER_STATE_TRAINING; });
  if (!result.ok()) return result.status();
  return log_.LogValidation(state_.step, result->pass_at[1],
                            result->mean_length, result->problems,
                            absl::ToDoubleSeconds(absl::Now() - start));
}

absl::Status Trainer::FinalEvaluation() {
  status_.Update(
      [](TrainingStatus::View& v) { v.state = v1::LEARNER_STATE_EVALUATING; });
  if (absl::Status s = EnsureAwake(); !s.ok()) return s;
  // A server someone else put to sleep is woken too.
  if (absl::Status s = rollout_->WakeIfAsleep(); !s.ok()) return s;
  return RunBenchmarks(FinalBenchmarkOptions(config_, run_.path), *rollout_,
                       *reward_, &stop_);
}

absl::Status Trainer::SleepForUpdate() {
  if (!config_.colocated || rollout_asleep_) return absl::OkStatus();
  absl::StatusOr<v1::SleepResponse> slept =
      rollout_->Sleep(/*abort_running=*/false);
  if (!slept.ok()) return slept.status();
  rollout_asleep_ = true;
  return absl::OkStatus();
}

Share Trainer::MyShare(int64_t count) const {
  return comm_ != nullptr ? ShareOf(count, comm_->rank(), comm_->world_size())
                          : Share{0, count};
}

bool Trainer::InSync() const {
  return comm_ != nullptr && !out_of_sync_ && !comm_->failed();
}

absl::Status Trainer::AgreeOn(const absl::Status& local) {
  agreed_failure_ = false;
  if (!InSync()) return local;
  absl::StatusOr<Agreement> agreed =
      Agree(*comm_, local, stop_.load(), state_.elapsed_seconds);
  if (!agreed.ok()) return agreed.status();
  if (agreed->stopping) stop_ = true;  // one stops, all stop
  state_.elapsed_seconds = agreed->elapsed_seconds;
  agreed_failure_ = !agreed->status.ok();
  return agreed->status;
}

absl::Status Trainer::Step() {
  const absl::Time start = absl::Now();
  device::ResetPeakMemory(device_);
  StepMetrics m = {{"step", state_.step + 1}, {"epoch", sampler_->epoch()}};
  std::vector<const Problem*> problems;
  std::pair<int64_t, int64_t> position;  // the sampler's, after `problems`
  absl::StatusOr<Rollouts> rollouts = absl::InternalError("no rollouts");
  Share share;
  // Data parallel, a stop is agreed on between phases instead.
  if (comm_ == nullptr && stop_) return absl::CancelledError("stopping");
  if (pipelined()) {
    rollouts = TakePrefetched(problems, position, m);
    share = MyShare(static_cast<int64_t>(problems.size()));
  } else {
    for (int64_t index : sampler_->Next(config_.prompts_per_step))
      problems.push_back(&problems_[index]);
    position = {sampler_->epoch(), sampler_->offset()};
    // A data-parallel rank generates and scores its share of the prompts.
    share = MyShare(static_cast<int64_t>(problems.size()));
    rollouts =
        Generate({problems.begin() + share.begin, problems.begin() + share.end},
                 share.begin);
    if (rollouts.ok()) {
      if (absl::Status s = Score(*rollouts); !s.ok()) rollouts = s;
    }
  }
  const int64_t total = static_cast<int64_t>(problems.size());
  absl::Status ready = rollouts.status();
  if (ready.ok()) ready = SleepForUpdate();
  if (absl::Status s = AgreeOn(ready); !s.ok()) return s;

  std::vector<Sample> samples;
  DataParallel data_parallel;
  std::vector<CompletionGroup> all_groups;  // data parallel: every rank's
  int64_t off_policy_refused = rollouts->off_policy_refused;
  try {
    if (comm_ != nullptr) {
      absl::StatusOr<SharedRollouts> shared = ShareRollouts(
          *comm_, total, share.begin, config_.group_size, rollouts->groups,
          rollouts->scores, rollouts->off_policy_refused);
      if (!shared.ok()) return shared.status();
      SampleShare mine = BuildSampleShare(shared->groups, shared->scores,
                                          SampleOptionsFrom(config_),
                                          share.begin, share.end, m);
      samples = std::move(mine.samples);
      data_parallel = {comm_.get(), mine.global_samples, mine.first_sample};
      if (auto& d = rollouts->dispatch; d.has_value()) {
        // Every rank's groups (the ranks share the servers, in one order).
        std::vector<int64_t> sums = d->groups_per_server;
        sums.push_back(d->redispatched);
        if (absl::Status s = SumOverRanks(*comm_, sums); !s.ok()) return s;
        d->redispatched = sums.back();
        sums.pop_back();
        d->groups_per_server = std::move(sums);
      }
      all_groups = std::move(shared->groups);
      off_policy_refused = shared->off_policy_refused;
    } else {
      samples = BuildSamples(rollouts->groups, rollouts->scores,
                             SampleOptionsFrom(config_), m);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("computing advantages failed: ", e.what()));
  }
  const absl::Time update_start = absl::Now();
  const int64_t optimizer_step_before = state_.optimizer_step;
  absl::StatusOr<UpdateStats> stats;
  dirty_ = true;  // until the step is committed below
  try {
    // Fault tests: running out of memory before the first optimizer step.
    const absl::Status injected =
        Failpoint("learner.update", absl::StatusCode::kResourceExhausted);
    // A stop before the first optimizer step ends the update between
    // micro-batches with the weights untouched (with one mini-batch per step,
    // the presets' setting, that is the whole update). Data-parallel ranks
    // finish the update together instead.
    std::function<bool()> stopping;
    if (comm_ == nullptr) stopping = [this] { return stop_.load(); };
    stats = injected.ok()
                ? updater_->Update(samples, state_.optimizer_step, stopping,
                                   comm_ != nullptr ? &data_parallel : nullptr)
                : absl::StatusOr<UpdateStats>(injected);
  } catch (const std::exception& e) {
    stats = absl::InternalError(absl::StrCat("the update failed: ", e.what()));
  }
  if (config_.colocated) device::ReleaseCachedMemory(device_);
  if (!stats.ok()) {
    if (state_.optimizer_step == optimizer_step_before) {
      // No optimizer step was taken (out of memory in the first micro-batch,
      // a stop): the weights are those of the last completed step, which the
      // run can still save.
      optimizer_->ZeroGrad();
      dirty_ = false;
    }
    return stats.status();
  }
  const double update_seconds =
      absl::ToDoubleSeconds(absl::Now() - update_start);
  // The step is committed once its update is done: the weights, the step count
  // and the data position move together (a resumed run publishes its adapter
  // at start-up, so a failed publish loses nothing).
  ++state_.step;
  state_.data_epoch = position.first;
  state_.data_offset = position.second;
  dirty_ = false;
  stepped_ = true;
  const absl::Time publish_start = absl::Now();
  // A failed publish still logs the committed step (then ends the run).
  const absl::Status published = Publish();
  if (pipelined() && published.ok()) {
    // The steps this adapter generates start now, during the logging and
    // checkpoint below and the next update.
    step_versions_[state_.step] = state_.adapter_version;
    FillPipeline();
  }
  const double publish_seconds =
      absl::ToDoubleSeconds(absl::Now() - publish_start);
  const absl::Duration step_time = absl::Now() - start;
  state_.elapsed_seconds += absl::ToDoubleSeconds(step_time);

  AddUpdateMetrics(*stats,
                   config_.tis_cap > 0 || config_.is_mask != IsMask::kNone, m);
  const int64_t generated =
      CompletionTokens(comm_ != nullptr ? all_groups : rollouts->groups);
  const StepTimes times = {rollouts->generate_seconds, rollouts->score_seconds,
                           update_seconds, publish_seconds,
                           absl::ToDoubleSeconds(step_time)};
  AddTimeMetrics(times, generated, stats->tokens, m);
  m["off_policy_refused"] = off_policy_refused;
  if (const auto& d = rollouts->dispatch; d.has_value())
    AddDispatchMetrics(d->groups_per_server, d->redispatched, m);
  m["adapter_version"] = state_.adapter_version;
  AddMemoryMetrics(device_, m);
  std::vector<std::string> ids;
  for (const Problem* p : problems) ids.push_back(p->id);
  m["problems"] = ids;
  if (comm_ != nullptr) m["ranks"] = comm_->world_size();
  if (!published.ok()) m["publish_error"] = std::string(published.message());
  absl::Status logged = absl::OkStatus();
  if (lead_) {
    logged = log_.LogStep(m, state_.step, config_.max_steps,
                          state_.elapsed_seconds, step_time);
  }
  // A step without its line must not be saved (the log would have a hole):
  // a resumed run does it again from the last checkpoint.
  if (!logged.ok()) dirty_ = true;
  status_.Update([&](TrainingStatus::View& v) { v.step = state_.step; });
  return AgreeOn(logged.ok() ? published : logged);
}

absl::Status Trainer::Run() {
  status_.Update(
      [](TrainingStatus::View& v) { v.state = v1::LEARNER_STATE_TRAINING; });
  absl::Status status;
  // The rollout server serves the current adapter before the first step, as a
  // new version (a restarted server has none; a running one an older one).
  // (Ranks sharing rollout servers: rank 0 for all.)
  if (!shares_servers() || lead_) {
    absl::StatusOr<v1::RolloutInfo> info = rollout_->GetInfo();
    status = info.status();
    if (info.ok()) {
      if (info->state() == v1::ROLLOUT_STATE_SLEEPING) rollout_asleep_ = true;
      status = RaiseToServedVersion(*info);
    }
  }
  if (status.ok() || shares_servers()) status = Publish(status);
  if (status.ok() && pipelined()) {
    // The pipeline's requests do not wait for a server found asleep.
    status = EnsureAwake();
    if (status.ok()) RestartPipeline();
  }
  const double budget = config_.time_budget_hours * 3600;
  // A data-parallel rank's error between agreements leaves the others
  // elsewhere: it must not join another collective (it exits, which they see).
  auto track = [this](const absl::Status& s) {
    if (!s.ok() && comm_ != nullptr && !agreed_failure_) out_of_sync_ = true;
    return s;
  };
  for (;;) {
    // Every rank's start, stop and failure are agreed on before each step.
    if (comm_ != nullptr) status = track(AgreeOn(status));
    // Data parallel, only the agreement decides (a stop that arrives after it
    // is agreed on at the next one): a rank that left alone would meet its
    // peers' next collective with another.
    if (!status.ok() || (comm_ == nullptr && stop_) ||
        state_.step >= config_.max_steps) {
      break;
    }
    if (state_.elapsed_seconds >= budget) {
      MRL_LOG(INFO) << "time budget of " << config_.time_budget_hours
                    << " h reached";
      break;
    }
    status = track(Step());
    if (!status.ok()) continue;
    const bool checkpoint = state_.step % config_.checkpoint_every == 0;
    if (checkpoint) status = track(Checkpoint());
    if (status.ok() && !checkpoint && comm_ != nullptr &&
        config_.distributed_check_every > 0 &&
        state_.step % config_.distributed_check_every == 0) {
      // Every rank gets the same answer (or a failed collective).
      status = CheckReplicasEqual(*comm_, *adapter_);
    }
    if (status.ok() && config_.eval_every > 0 &&
        state_.step % config_.eval_every == 0 && !eval_problems_.empty()) {
      status = track(Evaluate());
    }
  }
  // Generations still queued (a stop, an error, the time budget) end first.
  DrainPipeline();
  if (stop_ && (status.code() == absl::StatusCode::kCancelled))
    status = absl::OkStatus();
  // The last completed step is saved whatever ended the run (data parallel:
  // by rank 0, once every rank agrees there is one to save; a rank out of
  // step saves on its own, its weights being the last agreed step's).
  bool save = stepped_ && !dirty_ && checkpointed_step_ != state_.step;
  if (InSync()) {
    const absl::Status agreed =
        AgreeOn(save ? absl::OkStatus()
                     : absl::FailedPreconditionError("no step to save"));
    save =
        save && (agreed.ok() || agreed.code() == absl::StatusCode::kCancelled);
  }
  if (save) {
    absl::Status saved = Checkpoint();
    // Its agreement says again that a rank is stopping.
    if (stop_ && saved.code() == absl::StatusCode::kCancelled) {
      saved = absl::OkStatus();
    }
    if (status.ok()) status = saved;
  }
  if (status.ok() && !dirty_ && lead_) {
    status = adapter_->SavePeft(run_.path + "/adapter", config_.model_path);
  }
  if (status.ok() && !stop_ && lead_ && !config_.final_datasets.empty()) {
    status = FinalEvaluation();
    if (stop_ && status.code() == absl::StatusCode::kCancelled)
      status = absl::OkStatus();
  }
  // Leave the rollout server awake for whoever uses it next (one short try:
  // a stopping learner does not wait for it).
  if (rollout_asleep_) {
    if (absl::Status woke = rollout_->WakeOnce(absl::Seconds(10)); woke.ok()) {
      rollout_asleep_ = false;
    } else {
      MRL_LOG(WARNING) << "the rollout server is left asleep: " << woke;
    }
  }
  status_.Update([&](TrainingStatus::View& v) {
    v.state = status.ok() ? v1::LEARNER_STATE_DONE : v1::LEARNER_STATE_FAILED;
    v.error = status.ok() ? "" : std::string(status.message());
  });
  if (!status.ok()) MRL_LOG(ERROR) << "training failed: " << status;
  return status;
}

}  // namespace microrl::learner
