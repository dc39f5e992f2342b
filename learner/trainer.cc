#include "learner/trainer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/base/failpoint.h"
#include "common/base/file.h"
#include "common/base/logging.h"
#include "common/base/net.h"
#include "common/device/device.h"
#include "common/model/adapter_ipc.h"
#include "learner/eval_command.h"
#include "learner/evaluate.h"
#include "prometheus/counter.h"

namespace microrl::learner {
namespace fs = std::filesystem;
namespace {

uint64_t SplitMix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double sum = 0;
  for (double x : v) sum += x;
  return sum / static_cast<double>(v.size());
}

double Std(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double mean = Mean(v);
  double sum = 0;
  for (double x : v) sum += (x - mean) * (x - mean);
  return std::sqrt(sum / static_cast<double>(v.size() - 1));
}

std::string MetricName(const std::string& key) {
  std::string name = "microrl_train_";
  for (char c : key)
    name.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  return name;
}

// A resumed or initial adapter must have the shape the configuration asks for.
absl::Status CheckAdapterShape(const model::LoraAdapter& adapter,
                               const TrainConfig& config,
                               const std::string& source) {
  const model::LoraConfig& have = adapter.config();
  if (have.rank == config.lora_rank && have.alpha == config.lora_alpha &&
      have.use_rslora == config.lora_rslora &&
      have.targets.size() == config.lora_targets.size()) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      source, " holds an adapter of rank ", have.rank, ", alpha ", have.alpha,
      " on ", have.targets.size(), " modules; the configuration asks for rank ",
      config.lora_rank, ", alpha ", config.lora_alpha, " on ",
      config.lora_targets.size(), " (lora.* must match)"));
}

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

}  // namespace

struct Trainer::Rollouts {
  std::vector<const Problem*> problems;
  v1::GenerateResponse response;
  std::vector<std::string> prompt_texts;
  // Per completion (problem-major): reward, correctness, components.
  std::vector<RewardResult> scores;
  double generate_seconds = 0;
  double score_seconds = 0;
  // Completions refused for coming from another adapter version than the
  // learner's (then generated again).
  int64_t off_policy_refused = 0;
};

Trainer::Trainer(const TrainConfig& config, prometheus::Registry& registry,
                 TrainingStatus& status)
    : config_(config),
      registry_(registry),
      status_(status),
      off_policy_counter_(
          &prometheus::BuildCounter()
               .Name("microrl_learner_off_policy_completions_total")
               .Help("Completions refused because another adapter version "
                     "than the learner's produced them.")
               .Register(registry)
               .Add({})) {}

absl::StatusOr<std::unique_ptr<model::Decoder>> LoadTrainingDecoder(
    const TrainConfig& config) {
  absl::StatusOr<device::Device> dev = device::ResolveDevice(config.device);
  if (!dev.ok()) return dev.status();
  if (config.gpu_memory_gib > 0) {
    const absl::Status capped = device::CapMemory(
        *dev, static_cast<uint64_t>(config.gpu_memory_gib * (1 << 30)));
    if (!capped.ok()) {
      return absl::Status(capped.code(), absl::StrCat("model.gpu_memory_gib: ",
                                                      capped.message()));
    }
    MRL_LOG(INFO) << "GPU memory capped at " << config.gpu_memory_gib << " GiB";
  }
  model::DecoderOptions options;
  options.device =
      dev->cuda ? at::Device(at::kCUDA, dev->index) : at::Device(at::kCPU);
  options.dtype = config.dtype == "float32"    ? at::kFloat
                  : config.dtype == "bfloat16" ? at::kBFloat16
                  : config.dtype == "float16"  ? at::kHalf
                  : dev->cuda                  ? at::kBFloat16
                                               : at::kFloat;
  return model::Decoder::Load(config.model_path, options);
}

namespace {

// The configuration a run was started with (<run>/config.yaml) against the one
// it is resumed with: a change that breaks exact resume (seed, model, data,
// prompts and group size, LoRA shape) is refused; any other is logged.
absl::Status CheckResumeConfig(const std::string& saved_path,
                               const TrainConfig& config) {
  absl::StatusOr<std::string> text = ReadFileToString(saved_path);
  if (!text.ok()) return absl::OkStatus();  // a run from before config.yaml
  absl::StatusOr<TrainConfig> saved = ParseTrainConfig(*text, saved_path, {});
  if (!saved.ok()) return saved.status();
  std::vector<std::string> refused;
  auto same = [&](const char* key, const auto& was, const auto& now) {
    if (!(was == now)) refused.push_back(key);
  };
  same("run.seed", saved->seed, config.seed);
  same("model.path", saved->model_path, config.model_path);
  same("data.train", saved->train_path, config.train_path);
  same("data.problem_field", saved->problem_field, config.problem_field);
  same("data.answer_field", saved->answer_field, config.answer_field);
  same("data.system_prompt", saved->system_prompt, config.system_prompt);
  same("data.instruction", saved->instruction, config.instruction);
  same("rollout.prompts_per_step", saved->prompts_per_step,
       config.prompts_per_step);
  same("rollout.group_size", saved->group_size, config.group_size);
  same("lora.rank", saved->lora_rank, config.lora_rank);
  same("lora.alpha", saved->lora_alpha, config.lora_alpha);
  same("lora.targets", saved->lora_targets, config.lora_targets);
  same("lora.rslora", saved->lora_rslora, config.lora_rslora);
  if (!refused.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--resume: ", absl::StrJoin(refused, ", "),
        " differ from the run's configuration (", saved_path,
        "); a resumed run continues exactly only with the same ones. Start a "
        "new run.name to change them"));
  }
  // Everything else may change; say what did.
  const std::vector<std::string> before =
      absl::StrSplit(TrainConfigToYaml(*saved), '\n');
  const std::vector<std::string> after =
      absl::StrSplit(TrainConfigToYaml(config), '\n');
  for (size_t i = 0; i < std::max(before.size(), after.size()); ++i) {
    const std::string was = i < before.size() ? before[i] : "";
    const std::string now = i < after.size() ? after[i] : "";
    if (was != now) {
      MRL_LOG(WARNING) << "resume: configuration changed: \""
                       << absl::StripAsciiWhitespace(was) << "\" -> \""
                       << absl::StripAsciiWhitespace(now) << "\"";
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(
    const TrainConfig& config, bool resume, prometheus::Registry& registry,
    TrainingStatus& status) {
  std::unique_ptr<Trainer> t(new Trainer(config, registry, status));
  t->run_dir_ = config.output_dir + "/" + config.run_name;
  const std::string checkpoints = t->run_dir_ + "/checkpoints";
  if (HasCheckpointDirectories(checkpoints) && !resume) {
    return absl::AlreadyExistsError(absl::StrCat(
        t->run_dir_,
        " has checkpoints; pass --resume to continue it, or choose another "
        "run.name"));
  }
  std::vector<std::string> skipped;
  const std::optional<std::string> latest =
      resume ? LatestCheckpoint(checkpoints, &skipped) : std::nullopt;
  if (resume && !latest.has_value() && !skipped.empty()) {
    // Checkpoints exist and none verifies: never restart the run silently.
    return absl::DataLossError(absl::StrCat(
        "--resume: no checkpoint under ", checkpoints,
        " verifies: ", absl::StrJoin(skipped, "; ")));
  }
  std::error_code error;
  fs::create_directories(checkpoints, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", checkpoints, ": ", error.message()));
  }
  // One learner per run directory.
  absl::StatusOr<std::unique_ptr<RunLock>> lock = RunLock::Acquire(t->run_dir_);
  if (!lock.ok()) return lock.status();
  t->lock_ = *std::move(lock);
  // A resumed run continues exactly only with the configuration it began with.
  if (resume) {
    if (absl::Status s = CheckResumeConfig(t->run_dir_ + "/config.yaml", config);
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = WriteFileAtomically(t->run_dir_ + "/config.yaml",
                                           TrainConfigToYaml(config));
      !s.ok()) {
    return s;
  }

  // Model and adapter.
  absl::StatusOr<std::unique_ptr<model::Decoder>> decoder =
      LoadTrainingDecoder(config);
  if (!decoder.ok()) return decoder.status();
  const at::Device device = (*decoder)->options().device;
  t->decoder_ = *std::move(decoder);
  t->device_ = {device.is_cuda(), device.is_cuda() ? device.index() : 0};

  t->state_.seed = config.seed;
  if (latest.has_value()) {
    absl::StatusOr<LoadedCheckpoint> loaded =
        LoadCheckpoint(*latest, t->decoder_->config(), device);
    if (!loaded.ok()) return loaded.status();
    if (loaded->state.seed != config.seed) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--resume: ", *latest, " was trained with run.seed ",
          loaded->state.seed, ", the configuration says ", config.seed,
          "; the data order and samples would change"));
    }
    t->state_ = loaded->state;
    t->adapter_ = std::move(loaded->adapter);
    if (absl::Status shape = CheckAdapterShape(*t->adapter_, config, *latest);
        !shape.ok()) {
      return shape;
    }
    t->adapter_->SetRequiresGrad(true);
    t->checkpointed_step_ = t->state_.step;
    MRL_LOG(INFO) << "resuming " << t->run_dir_ << " from " << *latest
                  << " (step " << t->state_.step << ")";
  } else {
    model::LoraConfig lora;
    lora.rank = config.lora_rank;
    lora.alpha = config.lora_alpha;
    lora.use_rslora = config.lora_rslora;
    lora.targets.clear();
    for (const std::string& name : config.lora_targets) {
      absl::StatusOr<model::LoraModule> module = model::ParseLoraModule(name);
      if (!module.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("lora.targets: ", module.status().message()));
      }
      lora.targets.push_back(*module);
    }
    absl::StatusOr<std::unique_ptr<model::LoraAdapter>> adapter =
        config.lora_init.empty()
            ? model::LoraAdapter::Create(t->decoder_->config(), lora, device,
                                         config.seed)
            : model::LoraAdapter::LoadPeft(config.lora_init,
                                           t->decoder_->config(), device);
    if (!adapter.ok()) {
      return absl::Status(
          adapter.status().code(),
          absl::StrCat(config.lora_init.empty() ? "" : "lora.init: ",
                       adapter.status().message()));
    }
    t->adapter_ = *std::move(adapter);
    t->adapter_->SetRequiresGrad(true);
    if (!config.lora_init.empty()) {
      if (absl::Status shape =
              CheckAdapterShape(*t->adapter_, config, config.lora_init);
          !shape.ok()) {
        return shape;
      }
    }
  }
  t->optimizer_ = std::make_unique<AdamW>(
      t->adapter_->Parameters(),
      AdamWOptions{config.beta1, config.beta2, config.adam_epsilon,
                   config.weight_decay});
  if (latest.has_value()) {
    if (absl::Status s = LoadOptimizerState(*latest, t->state_.optimizer_step,
                                            *t->optimizer_);
        !s.ok()) {
      return s;
    }
  }

  UpdateOptions update;
  update.loss.policy.clip_low = config.clip_low;
  update.loss.policy.clip_high = config.clip_high;
  update.loss.policy.dual_clip = config.dual_clip;
  absl::StatusOr<LossAggregation> aggregation =
      ParseLossAggregation(config.loss_aggregation);
  if (!aggregation.ok()) return aggregation.status();
  update.loss.policy.aggregation = *aggregation;
  update.loss.kl_coef = config.kl_coef;
  absl::StatusOr<KlEstimator> estimator = ParseKlEstimator(config.kl_estimator);
  if (!estimator.ok()) return estimator.status();
  update.loss.kl_estimator = *estimator;
  update.loss.entropy_coef = config.entropy_coef;
  update.mini_batches = config.mini_batches;
  update.epochs = config.epochs;
  update.recompute_old_logprobs = config.old_logprobs == "recompute";
  update.micro_batch_tokens = config.micro_batch_tokens;
  update.temperature = config.temperature;
  update.gradient_checkpointing = config.gradient_checkpointing;
  update.horizon = config.loss_horizon > 0
                       ? config.loss_horizon
                       : static_cast<double>(config.max_response_tokens);
  update.max_grad_norm = config.max_grad_norm;
  update.schedule.lr = config.lr;
  update.schedule.cosine = config.schedule == "cosine";
  update.schedule.warmup_steps = config.warmup_steps;
  update.schedule.total_steps =
      config.max_steps * config.mini_batches * config.epochs;
  update.schedule.min_lr_ratio = config.min_lr_ratio;
  t->updater_ = std::make_unique<PolicyUpdater>(*t->decoder_, *t->adapter_,
                                                *t->optimizer_, update);

  // Data.
  absl::StatusOr<std::vector<Problem>> problems = LoadProblems(
      config.train_path, config.problem_field, config.answer_field);
  if (!problems.ok()) return problems.status();
  t->problems_ = *std::move(problems);
  if (!config.eval_path.empty()) {
    absl::StatusOr<std::vector<Problem>> eval = LoadProblems(
        config.eval_path, config.problem_field, config.answer_field);
    if (!eval.ok()) return eval.status();
    t->eval_problems_ = *std::move(eval);
    if (config.eval_problems > 0 &&
        static_cast<int64_t>(t->eval_problems_.size()) > config.eval_problems) {
      t->eval_problems_.resize(config.eval_problems);
    }
  }
  absl::StatusOr<PromptBuilder> prompts = PromptBuilder::Create(
      config.model_path, config.system_prompt, config.instruction);
  if (!prompts.ok()) return prompts.status();
  t->prompts_ = std::make_unique<PromptBuilder>(*std::move(prompts));
  t->sampler_ = std::make_unique<EpochSampler>(
      static_cast<int64_t>(t->problems_.size()), config.seed);
  t->sampler_->Seek(t->state_.data_epoch, t->state_.data_offset);

  // Clients.
  RolloutClientOptions rollout_options;
  rollout_options.generate_timeout = absl::Seconds(config.generate_timeout_s);
  // A peer that is down is retried (with a log line per attempt) for up to its
  // max_wait_s; then the run checkpoints and fails.
  rollout_options.retry.max_attempts = std::numeric_limits<int>::max();
  rollout_options.retry.max_elapsed = absl::Seconds(config.rollout_max_wait_s);
  absl::StatusOr<rpc::ClientSecurity> rollout_security =
      ResolvePeerSecurity(config.rollout_security, "rollout");
  if (!rollout_security.ok()) return rollout_security.status();
  absl::StatusOr<rpc::ClientSecurity> reward_security =
      ResolvePeerSecurity(config.reward_security, "reward");
  if (!reward_security.ok()) return reward_security.status();
  rollout_options.security = *rollout_security;
  t->reward_security_ = *reward_security;
  rpc::RetryPolicy reward_retry;
  reward_retry.max_attempts = std::numeric_limits<int>::max();
  reward_retry.max_elapsed = absl::Seconds(config.reward_max_wait_s);
  absl::StatusOr<std::unique_ptr<RolloutClient>> rollout =
      RolloutClient::Create(config.rollout_address, rollout_options);
  if (!rollout.ok()) return rollout.status();
  t->rollout_ = *std::move(rollout);
  absl::StatusOr<std::unique_ptr<RewardClient>> reward = RewardClient::Create(
      config.reward_address, absl::Seconds(config.reward_timeout_s),
      reward_retry, *reward_security);
  if (!reward.ok()) return reward.status();
  t->reward_ = *std::move(reward);

  // The metric series continues where the checkpoint left it.
  const std::string log_path = t->run_dir_ + "/metrics.jsonl";
  if (fs::exists(log_path)) {
    std::ifstream in(log_path);
    std::string kept;
    std::string line;
    while (std::getline(in, line)) {
      try {
        if (nlohmann::json::parse(line).value("step", int64_t{0}) <=
            t->state_.step) {
          kept += line + "\n";
        }
      } catch (const nlohmann::json::exception&) {
        // A torn last line from a crash: dropped.
      }
    }
    if (absl::Status s = WriteFileAtomically(log_path, kept); !s.ok()) return s;
  }
  status.Update([&](TrainingStatus::View& v) {
    v.state = v1::LEARNER_STATE_WAITING_FOR_PEERS;
    v.run_name = config.run_name;
    v.step = t->state_.step;
    v.total_steps = config.max_steps;
    v.adapter_version = t->state_.adapter_version;
  });
  MRL_LOG(INFO) << "configuration:\n" << TrainConfigToYaml(config);
  return t;
}

void Trainer::Stop() {
  stop_ = true;
  // Every call and every wait for a peer ends at once. An update ends at its
  // next micro-batch if it has not taken an optimizer step yet, else runs to
  // its end (then the step commits); either way the state saved at the end is
  // a completed step's.
  if (rollout_ != nullptr) rollout_->Cancel();
  if (reward_ != nullptr) reward_->Cancel();
}

// ------------------------------------------------------------------ the phases

std::vector<const Problem*> Trainer::SamplePrompts() {
  std::vector<const Problem*> batch;
  for (int64_t index : sampler_->Next(config_.prompts_per_step)) {
    batch.push_back(&problems_[index]);
  }
  return batch;
}

absl::StatusOr<Trainer::Rollouts> Trainer::Generate(
    const std::vector<const Problem*>& problems) {
  const absl::Time start = absl::Now();
  if (rollout_asleep_) {
    absl::StatusOr<v1::WakeResponse> woke = rollout_->Wake();
    if (!woke.ok()) return woke.status();
    rollout_asleep_ = false;
  }
  Rollouts rollouts;
  rollouts.problems = problems;
  v1::GenerateRequest request;
  request.set_group_size(static_cast<int32_t>(config_.group_size));
  request.set_min_adapter_version(state_.adapter_version);
  request.set_request_id(
      absl::StrCat(config_.run_name, "-step-", state_.step + 1));
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(static_cast<float>(config_.temperature));
  sampling->set_top_p(static_cast<float>(config_.top_p));
  sampling->set_top_k(static_cast<int32_t>(config_.top_k));
  sampling->set_max_tokens(static_cast<int32_t>(config_.max_response_tokens));
  sampling->set_seed(SplitMix64(config_.seed ^ SplitMix64(state_.step + 1)));
  for (const Problem* problem : problems) {
    absl::StatusOr<std::string> text = prompts_->Text(*problem);
    if (!text.ok()) return text.status();
    rollouts.prompt_texts.push_back(*text);
    absl::StatusOr<std::vector<int32_t>> ids =
        prompts_->tokenizer().EncodeChecked(*text, false);
    if (!ids.ok()) return ids.status();
    v1::Prompt* prompt = request.add_prompts();
    prompt->set_id(problem->id);
    prompt->mutable_token_ids()->mutable_ids()->Add(ids->begin(), ids->end());
  }
  absl::StatusOr<v1::GenerateResponse> response;
  // A rollout server restarted since the last publish serves an older adapter
  // (or none) and refuses the request; one that another learner (or a
  // restart with another --adapter_version) moved to another version answers
  // with that policy's samples. Either way: publish the current adapter again
  // as a new version and repeat the same request (same prompts and seed).
  // Only samples of exactly the learner's version are trained on.
  for (int attempt = 0;; ++attempt) {
    request.set_min_adapter_version(state_.adapter_version);
    response = rollout_->Generate(request);
    absl::Status refused;
    if (!response.ok()) {
      if (response.status().code() != absl::StatusCode::kFailedPrecondition) {
        return response.status();
      }
      refused = response.status();
    } else {
      int64_t other = 0;
      uint64_t seen = state_.adapter_version;
      for (const v1::CompletionGroup& group : response->groups()) {
        for (const v1::Completion& c : group.completions()) {
          if (c.adapter_version() != state_.adapter_version) {
            ++other;
            seen = c.adapter_version();
          }
        }
      }
      if (other == 0) break;
      rollouts.off_policy_refused += other;
      off_policy_counter_->Increment(static_cast<double>(other));
      refused = absl::FailedPreconditionError(absl::StrCat(
          other, " completions came from adapter version ", seen,
          ", not the learner's ", state_.adapter_version,
          " (another learner or evaluation publishing to the same rollout "
          "server?); refused"));
      MRL_LOG(WARNING) << refused.message();
    }
    if (attempt >= 2 || stop_) return refused;
    if (absl::Status s = Republish(); !s.ok()) return s;
  }
  rollouts.response = *std::move(response);
  rollouts.generate_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return rollouts;
}

absl::Status Trainer::Republish() {
  absl::StatusOr<v1::RolloutInfo> info = rollout_->GetInfo();
  if (!info.ok()) return info.status();
  MRL_LOG(WARNING) << "the rollout server serves adapter version "
                   << info->adapter_version() << ", not "
                   << state_.adapter_version
                   << " (restarted?): publishing the current adapter again";
  rollout_asleep_ = info->state() == v1::ROLLOUT_STATE_SLEEPING;
  if (rollout_asleep_) {
    absl::StatusOr<v1::WakeResponse> woke = rollout_->Wake();
    if (!woke.ok()) return woke.status();
    rollout_asleep_ = false;
  }
  state_.adapter_version =
      std::max(state_.adapter_version, info->adapter_version());
  // The restarted server may take CUDA IPC or not: ask again.
  ipc_checked_ = false;
  ipc_unavailable_ = false;
  return Publish();
}

absl::Status Trainer::Score(Rollouts& rollouts) {
  const absl::Time start = absl::Now();
  std::vector<RewardItem> items;
  for (size_t p = 0; p < rollouts.problems.size(); ++p) {
    const v1::CompletionGroup& group =
        rollouts.response.groups(static_cast<int>(p));
    for (int g = 0; g < group.completions_size(); ++g) {
      RewardItem item;
      item.id = absl::StrCat(rollouts.problems[p]->id, "#", g);
      item.prompt = rollouts.prompt_texts[p];
      item.completion = group.completions(g).text();
      item.ground_truth = rollouts.problems[p]->answer;
      items.push_back(std::move(item));
    }
  }
  absl::StatusOr<std::vector<RewardResult>> scores = reward_->Score(items);
  if (!scores.ok()) return scores.status();
  rollouts.scores = *std::move(scores);
  rollouts.score_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

std::vector<Sample> Trainer::ComputeAdvantages(const Rollouts& rollouts,
                                               StepMetrics& m) {
  const int64_t group = config_.group_size;
  std::vector<float> rewards;
  std::vector<double> reward_values, lengths;
  std::map<std::string, std::vector<double>> components;
  int64_t correct = 0;
  int64_t truncated = 0;
  int64_t max_length = 0;
  for (const RewardResult& r : rollouts.scores) {
    rewards.push_back(static_cast<float>(r.reward));
    reward_values.push_back(r.reward);
    correct += r.correct ? 1 : 0;
    for (const auto& [name, value] : r.components)
      components[name].push_back(value);
  }
  for (const v1::CompletionGroup& g : rollouts.response.groups()) {
    for (const v1::Completion& c : g.completions()) {
      lengths.push_back(c.completion_tokens());
      max_length = std::max<int64_t>(max_length, c.completion_tokens());
      truncated += c.finish_reason() == v1::FINISH_REASON_LENGTH ? 1 : 0;
    }
  }
  AdvantageOptions options;
  options.norm = config_.advantage == "none"    ? AdvantageNorm::kNone
                 : config_.advantage == "batch" ? AdvantageNorm::kBatchStd
                                                : AdvantageNorm::kGroupStd;
  options.epsilon = config_.advantage_epsilon;
  const at::Tensor reward_tensor = at::tensor(rewards, at::kFloat);
  const at::Tensor advantages =
      learner::ComputeAdvantages(reward_tensor, group, options).contiguous();
  const at::Tensor zero_variance =
      ZeroVarianceGroups(reward_tensor, group).contiguous();
  const float* adv = advantages.data_ptr<float>();
  const bool* flat = zero_variance.data_ptr<bool>();

  std::vector<Sample> samples;
  int64_t index = 0;
  int64_t zero_groups = 0;
  for (int p = 0; p < rollouts.response.groups_size(); ++p) {
    const v1::CompletionGroup& g = rollouts.response.groups(p);
    zero_groups += flat[index] ? 1 : 0;
    for (const v1::Completion& c : g.completions()) {
      const bool skip = (config_.filter_zero_variance && flat[index]) ||
                        c.token_ids().empty();
      if (!skip) {
        Sample s;
        s.prompt.assign(g.prompt_token_ids().begin(),
                        g.prompt_token_ids().end());
        s.completion.assign(c.token_ids().begin(), c.token_ids().end());
        s.rollout_logprobs.assign(c.logprobs().begin(), c.logprobs().end());
        s.advantage = adv[index];
        samples.push_back(std::move(s));
      }
      ++index;
    }
  }
  const double completions =
      static_cast<double>(std::max<size_t>(1, reward_values.size()));
  m["reward_mean"] = Mean(reward_values);
  m["reward_std"] = Std(reward_values);
  for (const auto& [name, values] : components)
    m["reward/" + name] = Mean(values);
  m["accuracy"] = correct / completions;
  m["zero_variance_fraction"] =
      static_cast<double>(zero_groups) /
      std::max<int>(1, rollouts.response.groups_size());
  m["response_length_mean"] = Mean(lengths);
  m["response_length_max"] = max_length;
  m["clipped_ratio"] = truncated / completions;
  m["trained_completions"] = static_cast<int64_t>(samples.size());
  return samples;
}

absl::StatusOr<UpdateStats> Trainer::Update(
    const std::vector<Sample>& samples) {
  // A stop before the first optimizer step ends the update between
  // micro-batches with the weights untouched (with one mini-batch per step,
  // the presets' setting, that is the whole update).
  absl::StatusOr<UpdateStats> stats = updater_->Update(
      samples, state_.optimizer_step, [this] { return stop_.load(); });
  if (config_.colocated) device::ReleaseCachedMemory(device_);
  return stats;
}

absl::Status Trainer::Publish() {
  // Fault tests: a publish that fails after the step committed.
  if (absl::Status s = Failpoint("learner.publish"); !s.ok()) return s;
  absl::Status published = PublishVersion(state_.adapter_version + 1);
  if (published.code() == absl::StatusCode::kFailedPrecondition) {
    // Another client (a `learner eval --adapter`, a second learner) loaded a
    // version at least as high: ours goes above it.
    absl::StatusOr<v1::RolloutInfo> info = rollout_->GetInfo();
    if (info.ok() && info->adapter_version() > state_.adapter_version) {
      MRL_LOG(WARNING) << "the rollout server serves adapter version "
                       << info->adapter_version()
                       << ", loaded by another client; publishing as version "
                       << info->adapter_version() + 1;
      state_.adapter_version = info->adapter_version();
      published = PublishVersion(state_.adapter_version + 1);
    }
  }
  return published;
}

absl::Status Trainer::PublishVersion(uint64_t version) {
  const at::ScalarType dtype =
      config_.publish_dtype == "bfloat16" ||
              (config_.publish_dtype == "auto" &&
               decoder_->options().dtype == at::kBFloat16)
          ? at::kBFloat16
          : at::kFloat;
  const std::string config_json = adapter_->PeftConfigJson(config_.model_path);
  absl::StatusOr<v1::LoadAdapterResponse> loaded =
      absl::UnimplementedError("not sent");
  const absl::StatusOr<HostPort> rollout =
      ParseHostPort(config_.rollout_address);
  const bool automatic = config_.publish_via == "auto";
  bool ipc =
      config_.publish_via == "cuda_ipc" ||
      (automatic && !ipc_unavailable_ && decoder_->options().device.is_cuda() &&
       rollout.ok() && IsLoopbackHost(rollout->host));
  auto give_up_ipc = [&](const absl::Status& why) {
    MRL_LOG(WARNING) << "CUDA IPC publishing is unavailable (" << why
                     << "): publishing over gRPC from now on";
    ipc_unavailable_ = true;
    ipc_staging_ = at::Tensor();
    ipc = false;
  };
  if (ipc && automatic && !ipc_checked_) {
    // A server that does not take IPC says so (it may be on the CPU, or not
    // know the field at all).
    absl::StatusOr<v1::RolloutInfo> info = rollout_->GetInfo();
    if (info.ok()) {
      ipc_checked_ = true;
      if (!info->accepts_cuda_ipc()) {
        give_up_ipc(absl::UnimplementedError(
            "the rollout server does not accept CUDA IPC adapters"));
      }
    }
  }
  bool stream = !ipc;
  if (ipc) {
    absl::StatusOr<model::IpcAdapter> shared =
        model::ExportAdapter(*adapter_, dtype, ipc_staging_);
    if (shared.ok()) {
      loaded = rollout_->LoadAdapterIpc(version, config_json, *shared);
      // The server cannot open it (CPU, another GPU or host, IPC off).
      if (automatic &&
          loaded.status().code() == absl::StatusCode::kUnimplemented) {
        give_up_ipc(loaded.status());
        stream = true;
      }
    } else if (automatic) {
      // E.g. no room for the packed copy under model.gpu_memory_gib: this
      // publish streams, the next tries IPC again.
      MRL_LOG(WARNING) << "CUDA IPC export failed (" << shared.status()
                       << "): publishing this adapter over gRPC";
      ipc_staging_ = at::Tensor();
      stream = true;
    } else {
      loaded = shared.status();
    }
  }
  if (stream) {
    absl::StatusOr<std::string> weights = adapter_->PeftSafetensors(dtype);
    if (!weights.ok()) return weights.status();
    loaded = rollout_->LoadAdapter(version, config_json, *weights);
  }
  if (!loaded.ok()) return loaded.status();
  state_.adapter_version = version;
  status_.Update([&](TrainingStatus::View& v) { v.adapter_version = version; });
  return absl::OkStatus();
}

absl::Status Trainer::AppendLog(const StepMetrics& line) {
  // One write per line; a failed one (a full disk) leaves no torn line.
  return AppendToFile(run_dir_ + "/metrics.jsonl", line.dump() + "\n");
}

void Trainer::SetGauge(const std::string& key, double value) {
  auto it = gauges_.find(key);
  if (it == gauges_.end()) {
    prometheus::Gauge& gauge =
        prometheus::BuildGauge()
            .Name(MetricName(key))
            .Help("Training metric " + key + " of the last step.")
            .Register(registry_)
            .Add({});
    it = gauges_.emplace(key, &gauge).first;
  }
  it->second->Set(value);
}

absl::Status Trainer::Log(const StepMetrics& m, absl::Duration step_time) {
  for (const auto& [key, value] : m.items()) {
    if (value.is_number()) SetGauge(key, value.get<double>());
  }
  if (absl::Status s = AppendLog(m); !s.ok()) return s;
  const double elapsed = state_.elapsed_seconds;
  const double per_step = elapsed / std::max<int64_t>(1, state_.step - 0);
  const double eta =
      per_step * static_cast<double>(config_.max_steps - state_.step);
  std::cout << absl::StrFormat(
                   "step %d/%d | reward %.3f | acc %.3f | len %.0f | entropy "
                   "%.3f | %.1f s/step "
                   "| ETA %s",
                   state_.step, config_.max_steps, m.value("reward_mean", 0.0),
                   m.value("accuracy", 0.0),
                   m.value("response_length_mean", 0.0),
                   m.value("entropy", 0.0), absl::ToDoubleSeconds(step_time),
                   FormatDuration(eta))
            << std::endl;
  return absl::OkStatus();
}

absl::Status Trainer::Checkpoint() {
  const std::string root = run_dir_ + "/checkpoints";
  // The log lines of the steps it holds are on disk before it is: a power cut
  // cannot leave a checkpoint whose steps have no line.
  if (absl::Status s = SyncFile(run_dir_ + "/metrics.jsonl"); !s.ok()) return s;
  if (absl::Status s =
          SaveCheckpoint(CheckpointDir(root, state_.step), state_, *adapter_,
                         *optimizer_, config_.model_path);
      !s.ok()) {
    return s;
  }
  PruneCheckpoints(root, config_.keep_checkpoints);
  checkpointed_step_ = state_.step;
  MRL_LOG(INFO) << "checkpoint at step " << state_.step;
  return absl::OkStatus();
}

absl::Status Trainer::Evaluate() {
  status_.Update(
      [](TrainingStatus::View& v) { v.state = v1::LEARNER_STATE_EVALUATING; });
  EvalOptions options;
  options.samples = 1;
  options.temperature = 0;  // greedy pass@1
  options.ks = {1};
  options.max_tokens = config_.eval_max_tokens > 0
                           ? config_.eval_max_tokens
                           : config_.max_response_tokens;
  options.min_adapter_version = state_.adapter_version;
  const absl::Time start = absl::Now();
  if (rollout_asleep_) {
    absl::StatusOr<v1::WakeResponse> woke = rollout_->Wake();
    if (!woke.ok()) return woke.status();
    rollout_asleep_ = false;
  }
  absl::StatusOr<EvalResult> result = learner::Evaluate(
      "validation", eval_problems_, *prompts_, *rollout_, *reward_, options);
  status_.Update(
      [](TrainingStatus::View& v) { v.state = v1::LEARNER_STATE_TRAINING; });
  if (!result.ok()) return result.status();
  StepMetrics line = {{"step", state_.step}, {"eval", "validation"}};
  line["val_pass@1"] = result->pass_at[1];
  line["val_mean_length"] = result->mean_length;
  line["val_seconds"] = absl::ToDoubleSeconds(absl::Now() - start);
  SetGauge("val_pass_at_1", result->pass_at[1]);
  std::cout << absl::StrFormat("step %d: validation pass@1 %.3f on %d problems",
                               state_.step, result->pass_at[1],
                               result->problems)
            << std::endl;
  return AppendLog(line);
}

absl::Status Trainer::Step() {
  const absl::Time start = absl::Now();
  device::ResetPeakMemory(device_);
  StepMetrics m = {{"step", state_.step + 1}, {"epoch", sampler_->epoch()}};
  const std::vector<const Problem*> problems = SamplePrompts();
  if (stop_) return absl::CancelledError("stopping");
  absl::StatusOr<Rollouts> rollouts = Generate(problems);
  if (!rollouts.ok()) return rollouts.status();
  if (absl::Status s = Score(*rollouts); !s.ok()) return s;
  std::vector<Sample> samples;
  try {
    samples = ComputeAdvantages(*rollouts, m);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("computing advantages failed: ", e.what()));
  }
  // Colocated: the rollout server sleeps before the update, outside the
  // uncommitted region, so a server that stays down fails the step with the
  // last completed one still savable.
  if (config_.colocated && !rollout_asleep_) {
    absl::StatusOr<v1::SleepResponse> slept =
        rollout_->Sleep(/*abort_running=*/false);
    if (!slept.ok()) return slept.status();
    rollout_asleep_ = true;
  }
  const absl::Time update_start = absl::Now();
  const int64_t optimizer_step_before = state_.optimizer_step;
  absl::StatusOr<UpdateStats> stats;
  dirty_ = true;  // until the step is committed below
  try {
    // Fault tests: running out of memory before the first optimizer step.
    const absl::Status injected =
        Failpoint("learner.update", absl::StatusCode::kResourceExhausted);
    stats = injected.ok() ? Update(samples)
                          : absl::StatusOr<UpdateStats>(injected);
  } catch (const std::exception& e) {
    stats = absl::InternalError(absl::StrCat("the update failed: ", e.what()));
  }
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
  state_.data_epoch = sampler_->epoch();
  state_.data_offset = sampler_->offset();
  dirty_ = false;
  stepped_ = true;
  const absl::Time publish_start = absl::Now();
  // A failed publish still logs the committed step (then ends the run).
  const absl::Status published = Publish();
  const double publish_seconds =
      absl::ToDoubleSeconds(absl::Now() - publish_start);
  const absl::Duration step_time = absl::Now() - start;
  state_.elapsed_seconds += absl::ToDoubleSeconds(step_time);

  m["entropy"] = stats->entropy;
  m["kl"] = stats->kl;
  m["policy_loss"] = stats->policy_loss;
  m["loss"] = stats->loss;
  m["clip_fraction_low"] = stats->clip_low_fraction;
  m["clip_fraction_high"] = stats->clip_high_fraction;
  m["dual_clip_fraction"] = stats->dual_clip_fraction;
  m["approx_kl"] = stats->approx_kl;
  m["grad_norm"] = stats->grad_norm;
  m["lr"] = stats->lr;
  m["logprob_mismatch_mean"] = stats->logprob_mismatch_mean;
  m["logprob_mismatch_max"] = stats->logprob_mismatch_max;
  m["optimizer_steps"] = stats->optimizer_steps;
  m["skipped_optimizer_steps"] = stats->skipped_steps;
  int64_t generated = 0;
  for (const auto& g : rollouts->response.groups()) {
    for (const auto& c : g.completions()) generated += c.completion_tokens();
  }
  m["time/generate"] = rollouts->generate_seconds;
  m["time/score"] = rollouts->score_seconds;
  m["time/update"] = update_seconds;
  m["time/publish"] = publish_seconds;
  m["time/step"] = absl::ToDoubleSeconds(step_time);
  m["off_policy_refused"] = rollouts->off_policy_refused;
  m["generate_tokens_per_second"] = rollouts->generate_seconds > 0
                                        ? generated / rollouts->generate_seconds
                                        : 0;
  m["update_tokens_per_second"] =
      update_seconds > 0 ? stats->tokens / update_seconds : 0;
  m["adapter_version"] = state_.adapter_version;
  const device::MemoryInfo memory = device::QueryMemory(device_);
  m["gpu_memory_allocated_bytes"] = memory.allocated_bytes;
  m["gpu_memory_reserved_bytes"] = memory.reserved_bytes;
  // The step's highest (its update's), against model.gpu_memory_gib.
  m["gpu_memory_peak_allocated_bytes"] = memory.peak_allocated_bytes;
  m["gpu_memory_peak_reserved_bytes"] = memory.peak_reserved_bytes;
  std::vector<std::string> ids;
  for (const Problem* p : problems) ids.push_back(p->id);
  m["problems"] = ids;
  if (!published.ok()) m["publish_error"] = std::string(published.message());
  if (absl::Status s = Log(m, step_time); !s.ok()) {
    // A step without its line must not be saved (the log would have a hole):
    // a resumed run does it again from the last checkpoint.
    dirty_ = true;
    return s;
  }
  status_.Update([&](TrainingStatus::View& v) { v.step = state_.step; });
  return published;
}

absl::Status Trainer::Run() {
  started_ = absl::Now();
  status_.Update(
      [](TrainingStatus::View& v) { v.state = v1::LEARNER_STATE_TRAINING; });
  absl::Status status;
  // The rollout server serves the current adapter before the first step, as a
  // new version (a restarted server has none; a running one an older one).
  absl::StatusOr<v1::RolloutInfo> info = rollout_->GetInfo();
  if (!info.ok()) {
    status = info.status();
  } else {
    if (info->state() == v1::ROLLOUT_STATE_SLEEPING) rollout_asleep_ = true;
    state_.adapter_version =
        std::max(state_.adapter_version, info->adapter_version());
    status = Publish();
  }
  const double budget = config_.time_budget_hours * 3600;
  while (status.ok() && state_.step < config_.max_steps && !stop_) {
    if (state_.elapsed_seconds >= budget) {
      MRL_LOG(INFO) << "time budget of " << config_.time_budget_hours
                    << " h reached";
      break;
    }
    status = Step();
    if (!status.ok()) break;
    if (state_.step % config_.checkpoint_every == 0) status = Checkpoint();
    if (status.ok() && config_.eval_every > 0 &&
        state_.step % config_.eval_every == 0 && !eval_problems_.empty()) {
      status = Evaluate();
    }
  }
  if (stop_ && (status.code() == absl::StatusCode::kCancelled))
    status = absl::OkStatus();
  // The last completed step is saved whatever ended the run.
  if (stepped_ && !dirty_ && checkpointed_step_ != state_.step) {
    absl::Status saved = Checkpoint();
    if (status.ok()) status = saved;
  }
  if (status.ok() && !dirty_) {
    status = adapter_->SavePeft(run_dir_ + "/adapter", config_.model_path);
  }
  if (status.ok() && !stop_ && !config_.final_datasets.empty()) {
    status_.Update([](TrainingStatus::View& v) {
      v.state = v1::LEARNER_STATE_EVALUATING;
    });
    EvalCommandOptions eval;
    eval.model_dir = config_.model_path;
    eval.compare_base = config_.final_compare_base;
    eval.datasets = config_.final_datasets;
    eval.data_dir = config_.eval_data_dir;
    eval.problem_field = config_.problem_field;
    eval.answer_field = config_.answer_field;
    eval.system_prompt = config_.system_prompt;
    eval.instruction = config_.instruction;
    eval.samples = config_.final_samples;
    eval.temperature = config_.final_temperature;
    eval.top_p = config_.final_top_p;
    eval.max_tokens = config_.eval_max_tokens > 0 ? config_.eval_max_tokens
                                                  : config_.max_response_tokens;
    eval.seed = config_.seed;
    eval.rollout_address = config_.rollout_address;
    eval.reward_address = config_.reward_address;
    eval.reward_security = reward_security_;
    eval.out_dir = run_dir_ + "/eval";
    if (rollout_asleep_) {
      absl::StatusOr<v1::WakeResponse> woke = rollout_->Wake();
      if (!woke.ok()) status = woke.status();
      rollout_asleep_ = false;
    }
    if (status.ok()) status = RunEvalCommand(eval, rollout_.get(), &stop_);
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
