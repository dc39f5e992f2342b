// The trainer's rollouts: generating and scoring a step's groups, keeping the
// rollout servers on the learner's adapter, and (rollout.max_staleness > 0)
// the pipeline that generates the next steps while the update runs.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"
#include "learner/data_parallel.h"
#include "learner/samples.h"
#include "learner/trainer.h"

namespace microrl::learner {

absl::StatusOr<std::vector<PromptIds>> Trainer::PreparePrompts(
    const std::vector<const Problem*>& problems, Rollouts& rollouts) const {
  std::vector<PromptIds> prompts;
  for (const Problem* problem : problems) {
    absl::StatusOr<std::string> text = prompts_->Text(*problem);
    if (!text.ok()) return text.status();
    rollouts.prompt_texts.push_back(*text);
    absl::StatusOr<std::vector<int32_t>> ids =
        prompts_->tokenizer().EncodeChecked(*text, false);
    if (!ids.ok()) return ids.status();
    prompts.push_back({problem->id, *std::move(ids)});
  }
  return prompts;
}

absl::StatusOr<Trainer::Rollouts> Trainer::Generate(
    const std::vector<const Problem*>& problems, int64_t first_prompt_index) {
  const absl::Time start = absl::Now();
  // Ranks sharing servers agree on every outcome below, this one included.
  const absl::Status awake = EnsureAwake();
  Rollouts rollouts;
  rollouts.problems = problems;
  GenerateParams params =
      StepGenerateParams(config_, state_.step + 1, first_prompt_index);
  absl::StatusOr<std::vector<PromptIds>> prompts =
      awake.ok() ? PreparePrompts(problems, rollouts)
                 : absl::StatusOr<std::vector<PromptIds>>(awake);
  absl::StatusOr<std::vector<CompletionGroup>> groups;
  // A rollout server restarted since the last publish serves an older adapter
  // (or none) and refuses the request; one that another learner (or a
  // restart with another --adapter_version) moved to another version answers
  // with that policy's samples. Either way: publish the current adapter again
  // as a new version and repeat the same request (same prompts and seed).
  // Only samples of exactly the learner's version are trained on.
  for (int attempt = 0;; ++attempt) {
    absl::Status local = prompts.status();  // refused: FAILED_PRECONDITION
    if (local.ok()) {
      params.min_adapter_version = state_.adapter_version;
      groups = pool_ != nullptr ? pool_->Generate(*prompts, params)
                                : rollout_->Generate(*prompts, params);
      local = groups.status();
    }
    if (local.ok()) {
      uint64_t seen = state_.adapter_version;
      if (const int64_t other =
              CountOffPolicy(*groups, state_.adapter_version, &seen);
          other > 0) {
        rollouts.off_policy_refused += other;
        off_policy_counter_->Increment(static_cast<double>(other));
        local = absl::FailedPreconditionError(absl::StrCat(
            other, " completions came from adapter version ", seen,
            ", not the learner's ", state_.adapter_version,
            " (another learner or evaluation publishing to the same rollout "
            "server?); refused"));
        MRL_LOG(WARNING) << local.message();
      }
    }
    if (shares_servers()) {
      // The ranks share the servers: if any rank was refused, rank 0 loads
      // the adapter again for all and they all repeat their requests.
      absl::StatusOr<GenerateOutcome> outcome = AgreeOnGenerate(*comm_, local);
      if (!outcome.ok()) return outcome.status();
      if (*outcome == GenerateOutcome::kServed) break;
      if (!local.ok() && *outcome != GenerateOutcome::kRefused) return local;
      if (*outcome == GenerateOutcome::kStopping) {
        return absl::CancelledError("a rank is stopping");
      }
      if (*outcome == GenerateOutcome::kFailed || attempt >= 2) {
        return !local.ok() ? local
                           : absl::AbortedError(
                                 "another rank failed generating (its log "
                                 "says why)");
      }
    } else {
      if (local.ok()) break;
      if (local.code() != absl::StatusCode::kFailedPrecondition ||
          attempt >= 2 || stop_) {
        return local;
      }
    }
    if (absl::Status s = Republish(); !s.ok()) return s;
  }
  rollouts.groups = *std::move(groups);
  if (pool_ != nullptr) rollouts.dispatch = pool_->last_dispatch();
  rollouts.generate_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return rollouts;
}

absl::Status Trainer::Republish() {
  // Ranks sharing rollout servers: rank 0 loads the adapter for all.
  if (shares_servers() && !lead_) return Publish();
  absl::Status ready = [&]() -> absl::Status {
    absl::StatusOr<v1::RolloutInfo> info = rollout_->GetInfo();
    if (!info.ok()) return info.status();
    MRL_LOG(WARNING) << "the rollout server serves adapter version "
                     << info->adapter_version() << ", not "
                     << state_.adapter_version
                     << " (restarted?): publishing the current adapter again";
    rollout_asleep_ = info->state() == v1::ROLLOUT_STATE_SLEEPING;
    if (absl::Status s = EnsureAwake(); !s.ok()) return s;
    return RaiseToServedVersion(*info);
  }();
  // The restarted server may take CUDA IPC or not: ask again.
  publisher_->Reset();
  for (auto& publisher : pool_publishers_) publisher->Reset();
  return Publish(ready);
}

absl::Status Trainer::RaiseToServedVersion(const v1::RolloutInfo& info) {
  state_.adapter_version =
      std::max(state_.adapter_version, info.adapter_version());
  if (pool_ == nullptr) return absl::OkStatus();
  absl::StatusOr<uint64_t> served = pool_->MaxAdapterVersion();
  if (!served.ok()) return served.status();
  state_.adapter_version = std::max(state_.adapter_version, *served);
  return absl::OkStatus();
}

absl::Status Trainer::Score(Rollouts& rollouts) {
  const absl::Time start = absl::Now();
  std::vector<std::string> ids, answers;
  for (const Problem* problem : rollouts.problems) {
    ids.push_back(problem->id);
    answers.push_back(problem->answer);
  }
  absl::StatusOr<std::vector<RewardResult>> scores = reward_->Score(
      RewardItemsFor(ids, rollouts.prompt_texts, answers, rollouts.groups));
  if (!scores.ok()) return scores.status();
  rollouts.scores = *std::move(scores);
  rollouts.score_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

absl::StatusOr<Trainer::Rollouts> Trainer::GenerateWith(
    const std::vector<const Problem*>& problems, int64_t first_prompt_index,
    int64_t step, uint64_t version) {
  const absl::Time start = absl::Now();
  Rollouts rollouts;
  rollouts.problems = problems;
  absl::StatusOr<std::vector<PromptIds>> prompts =
      PreparePrompts(problems, rollouts);
  if (!prompts.ok()) return prompts.status();
  GenerateParams params = StepGenerateParams(config_, step, first_prompt_index);
  params.adapter_version = version;
  absl::StatusOr<std::vector<CompletionGroup>> groups =
      pool_ != nullptr ? pool_->Generate(*prompts, params)
                       : rollout_->Generate(*prompts, params);
  if (!groups.ok()) return groups.status();
  // Every completion must come from the version asked for: the bound on
  // staleness holds for what is trained on, not only for what was asked.
  uint64_t seen = version;
  if (const int64_t other = CountOffPolicy(*groups, version, &seen);
      other > 0) {
    off_policy_counter_->Increment(static_cast<double>(other));
    return absl::FailedPreconditionError(absl::StrCat(
        other, " completions of step ", step, " came from adapter version ",
        seen, ", not ", version, " as asked; refused"));
  }
  rollouts.groups = *std::move(groups);
  if (pool_ != nullptr) rollouts.dispatch = pool_->last_dispatch();
  rollouts.generate_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return rollouts;
}

int64_t Trainer::LagStep(int64_t step) const {
  const int64_t every = config_.checkpoint_every;
  const int64_t base = std::max(pipeline_start_, (step - 1) / every * every);
  return std::max(step - 1 - config_.max_staleness, base);
}

void Trainer::FillPipeline() {
  while (next_prefetch_ <= config_.max_steps) {
    const int64_t lag = LagStep(next_prefetch_);
    const auto version = step_versions_.find(lag);
    if (version == step_versions_.end()) break;  // not published yet
    Prefetch item;
    item.step = next_prefetch_;
    item.lag_step = lag;
    item.version = version->second;
    item.epoch = sampler_->epoch();
    for (int64_t index : sampler_->Next(config_.prompts_per_step))
      item.problems.push_back(&problems_[index]);
    item.data_epoch = sampler_->epoch();
    item.data_offset = sampler_->offset();
    item.rollouts = std::make_shared<Rollouts>();
    auto done = std::make_shared<std::promise<absl::Status>>();
    item.done = done->get_future();
    // This rank's share of the step's problems (all, alone).
    const Share share = MyShare(static_cast<int64_t>(item.problems.size()));
    prefetcher_->Post([this, done, rollouts = item.rollouts,
                       problems = std::vector<const Problem*>(
                           item.problems.begin() + share.begin,
                           item.problems.begin() + share.end),
                       first = share.begin, step = item.step,
                       pinned = item.version] {
      // A pipeline being drained starts no more generations.
      if (draining_) {
        done->set_value(absl::CancelledError("the rollout pipeline stopped"));
        return;
      }
      absl::Status status;
      try {
        absl::StatusOr<Rollouts> generated =
            GenerateWith(problems, first, step, pinned);
        status = generated.status();
        if (status.ok()) {
          *rollouts = *std::move(generated);
          status = Score(*rollouts);
        }
      } catch (const std::exception& e) {
        status = absl::InternalError(absl::StrCat(
            "generating step ", step, "'s rollouts failed: ", e.what()));
      } catch (...) {
        status = absl::InternalError(
            absl::StrCat("generating step ", step, "'s rollouts failed"));
      }
      done->set_value(status);
    });
    prefetched_.push_back(std::move(item));
    ++next_prefetch_;
  }
  // The versions no step still to queue needs.
  step_versions_.erase(step_versions_.begin(),
                       step_versions_.lower_bound(LagStep(next_prefetch_)));
}

void Trainer::DrainPipeline() {
  // The generation under way finishes; the queued ones do not start.
  draining_ = true;
  for (Prefetch& item : prefetched_) item.done.wait();
  prefetched_.clear();
  draining_ = false;
}

void Trainer::RestartPipeline() {
  DrainPipeline();
  sampler_->Seek(state_.data_epoch, state_.data_offset);
  step_versions_.clear();
  step_versions_[state_.step] = state_.adapter_version;
  pipeline_start_ = state_.step;
  next_prefetch_ = state_.step + 1;
  FillPipeline();
}

absl::StatusOr<Trainer::Rollouts> Trainer::TakePrefetched(
    std::vector<const Problem*>& problems,
    std::pair<int64_t, int64_t>& position, StepMetrics& m) {
  for (int attempt = 0;; ++attempt) {
    FillPipeline();
    if (prefetched_.empty() || prefetched_.front().step != state_.step + 1) {
      return absl::InternalError(absl::StrCat("step ", state_.step + 1,
                                              "'s rollouts were not queued"));
    }
    Prefetch item = std::move(prefetched_.front());
    prefetched_.pop_front();
    const absl::Time wait_start = absl::Now();
    absl::Status done = item.done.get();
    const double waited = absl::ToDoubleSeconds(absl::Now() - wait_start);
    bool refused = done.code() == absl::StatusCode::kFailedPrecondition;
    if (comm_ != nullptr) {
      // The ranks restart the pipeline together, or stop or fail together.
      absl::StatusOr<GenerateOutcome> outcome = AgreeOnGenerate(*comm_, done);
      if (!outcome.ok()) return outcome.status();
      refused = *outcome == GenerateOutcome::kRefused;
      if (done.ok() && *outcome == GenerateOutcome::kStopping) {
        done = absl::CancelledError("a rank is stopping");
      } else if (done.ok() && *outcome == GenerateOutcome::kFailed) {
        done = absl::AbortedError(
            "another rank failed generating (its log says why)");
      }
    }
    if (refused) {
      if (attempt > 0 || (comm_ == nullptr && stop_)) {
        return !done.ok() ? done
                          : absl::FailedPreconditionError(
                                "another rank's rollouts were refused for "
                                "their adapter version");
      }
      // A rollout server lost the version (it restarted) or serves another:
      // publish the current adapter again and go on from it.
      MRL_LOG(WARNING) << "step " << item.step << "'s rollouts: " << done
                       << "; restarting the rollout pipeline";
      absl::Status republished = Republish();
      if (comm_ != nullptr) {
        absl::StatusOr<GenerateOutcome> again =
            AgreeOnGenerate(*comm_, republished);
        if (!again.ok()) return again.status();
        if (republished.ok() && *again != GenerateOutcome::kServed) {
          republished = absl::AbortedError(
              "another rank failed to publish again (its log says why)");
        }
      }
      if (!republished.ok()) return republished;
      RestartPipeline();
      continue;
    }
    if (!done.ok()) return done;
    problems = std::move(item.problems);
    position = {item.data_epoch, item.data_offset};
    m["epoch"] = item.epoch;
    m["staleness"] = state_.step - item.lag_step;
    m["rollout_adapter_version"] = item.version;
    m["rollout_wait_seconds"] = waited;
    return std::move(*item.rollouts);
  }
}

}  // namespace microrl::learner
