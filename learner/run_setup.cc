#include "learner/run_setup.h"

#include <algorithm>
#include <filesystem>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/file.h"
#include "common/base/logging.h"
#include "common/base/net.h"
#include "common/base/random.h"
#include "common/device/device.h"
#include "common/model/loader.h"
#include "learner/checkpoint.h"
#include "learner/grpo.h"

namespace microrl::learner {
namespace {

// The configuration a run was started with (<run>/config.yaml) against the one
// it is resumed with.
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

absl::StatusOr<std::unique_ptr<model::Decoder>> LoadTrainingDecoder(
    const TrainConfig& config) {
  absl::StatusOr<device::Device> dev = device::ResolveDevice(config.device);
  if (!dev.ok()) return dev.status();
  model::ModelLoadOptions load;
  load.model_dir = config.model_path;
  load.device = *dev;
  load.dtype = config.dtype;
  load.gpu_memory_gib = config.gpu_memory_gib;
  load.dtype_setting = "model.dtype";
  load.memory_setting = "model.gpu_memory_gib";
  load.model_setting = "";
  return model::LoadModel(load);
}

absl::StatusOr<model::LoraConfig> LoraConfigFrom(const TrainConfig& config) {
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
  return lora;
}

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

absl::StatusOr<std::unique_ptr<model::LoraAdapter>> CreateOrLoadAdapter(
    const TrainConfig& config, const model::Decoder& decoder) {
  const at::Device device = decoder.options().device;
  absl::StatusOr<std::unique_ptr<model::LoraAdapter>> adapter;
  if (config.lora_init.empty()) {
    absl::StatusOr<model::LoraConfig> lora = LoraConfigFrom(config);
    if (!lora.ok()) return lora.status();
    adapter = model::LoraAdapter::Create(decoder.config(), *lora, device,
                                         config.seed);
    if (!adapter.ok()) return adapter.status();
  } else {
    adapter = model::LoraAdapter::LoadPeft(config.lora_init, decoder.config(),
                                           device);
    if (!adapter.ok()) {
      return absl::Status(
          adapter.status().code(),
          absl::StrCat("lora.init: ", adapter.status().message()));
    }
    if (absl::Status shape =
            CheckAdapterShape(**adapter, config, config.lora_init);
        !shape.ok()) {
      return shape;
    }
  }
  (*adapter)->SetRequiresGrad(true);
  return adapter;
}

ScheduleOptions ScheduleFrom(const TrainConfig& config, int64_t total_steps) {
  ScheduleOptions schedule;
  schedule.lr = config.lr;
  schedule.cosine = config.schedule == LrSchedule::kCosine;
  schedule.warmup_steps = config.warmup_steps;
  schedule.total_steps = total_steps;
  schedule.min_lr_ratio = config.min_lr_ratio;
  return schedule;
}

absl::StatusOr<UpdateOptions> UpdateOptionsFrom(const TrainConfig& config) {
  UpdateOptions update;
  update.loss.policy.clip_low = config.clip_low;
  update.loss.policy.clip_high = config.clip_high;
  update.loss.policy.dual_clip = config.dual_clip;
  update.loss.policy.aggregation = config.loss_aggregation;
  update.loss.kl_coef = config.kl_coef;
  update.loss.kl_estimator = config.kl_estimator;
  update.loss.entropy_coef = config.entropy_coef;
  update.mini_batches = config.mini_batches;
  update.epochs = config.epochs;
  update.recompute_old_logprobs =
      config.old_logprobs == OldLogprobs::kRecompute;
  update.micro_batch_tokens = config.micro_batch_tokens;
  update.packing = config.packing;
  update.share_prompts = config.share_prompts;
  update.temperature = config.temperature;
  update.gradient_checkpointing = config.gradient_checkpointing;
  update.horizon = config.loss_horizon > 0
                       ? config.loss_horizon
                       : static_cast<double>(config.max_response_tokens);
  update.max_grad_norm = config.max_grad_norm;
  update.off_policy.tis_cap = config.tis_cap;
  update.off_policy.mask = config.is_mask;
  update.off_policy.mask_low = config.is_mask_low;
  update.off_policy.mask_high = config.is_mask_high;
  update.schedule = ScheduleFrom(
      config, config.max_steps * config.mini_batches * config.epochs);
  return update;
}

absl::StatusOr<LoadedCheckpoint> ResumeFrom(const std::string& dir,
                                            const TrainConfig& config,
                                            const model::Decoder& decoder) {
  absl::StatusOr<LoadedCheckpoint> loaded =
      LoadCheckpoint(dir, decoder.config(), decoder.options().device);
  if (!loaded.ok()) return loaded.status();
  if (loaded->state.seed != config.seed) {
    return absl::FailedPreconditionError(
        absl::StrCat("--resume: ", dir, " was trained with run.seed ",
                     loaded->state.seed, ", the configuration says ",
                     config.seed, "; the data order and samples would change"));
  }
  if (absl::Status shape = CheckAdapterShape(*loaded->adapter, config, dir);
      !shape.ok()) {
    return shape;
  }
  loaded->adapter->SetRequiresGrad(true);
  return loaded;
}

absl::StatusOr<TrainingModel> LoadTrainingModel(
    const TrainConfig& config, const std::optional<std::string>& checkpoint) {
  TrainingModel m;
  absl::StatusOr<std::unique_ptr<model::Decoder>> decoder =
      LoadTrainingDecoder(config);
  if (!decoder.ok()) return decoder.status();
  m.decoder = *std::move(decoder);
  m.state.seed = config.seed;
  if (checkpoint.has_value()) {
    absl::StatusOr<LoadedCheckpoint> loaded =
        ResumeFrom(*checkpoint, config, *m.decoder);
    if (!loaded.ok()) return loaded.status();
    m.state = loaded->state;
    m.adapter = std::move(loaded->adapter);
  } else {
    absl::StatusOr<std::unique_ptr<model::LoraAdapter>> adapter =
        CreateOrLoadAdapter(config, *m.decoder);
    if (!adapter.ok()) return adapter.status();
    m.adapter = *std::move(adapter);
  }
  m.optimizer = std::make_unique<AdamW>(
      m.adapter->Parameters(),
      AdamWOptions{config.beta1, config.beta2, config.adam_epsilon,
                   config.weight_decay});
  if (checkpoint.has_value()) {
    if (absl::Status s = LoadOptimizerState(*checkpoint, m.state.optimizer_step,
                                            *m.optimizer);
        !s.ok()) {
      return s;
    }
  }
  return m;
}

absl::StatusOr<PeerClients> ConnectPeers(const TrainConfig& config) {
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
  rpc::RetryPolicy reward_retry;
  reward_retry.max_attempts = std::numeric_limits<int>::max();
  reward_retry.max_elapsed = absl::Seconds(config.reward_max_wait_s);
  PeerClients peers;
  if (config.rollout_addresses.empty()) {
    peers.rollout_addresses = {config.rollout_address};
  }
  for (const std::string& entry : config.rollout_addresses) {
    if (!absl::StartsWith(entry, "dns:")) {
      peers.rollout_addresses.push_back(entry);
      continue;
    }
    absl::StatusOr<HostPort> name = ParseHostPort(entry.substr(4));
    if (!name.ok()) return name.status();
    // The learner connects to the addresses the name resolves to; a TLS
    // certificate is checked against the name (unless tls_server_name says).
    if (rollout_options.security.tls_server_name.empty()) {
      rollout_options.security.tls_server_name = name->host;
    }
    absl::StatusOr<std::vector<std::string>> resolved =
        ResolveAll(name->host, name->port);
    if (!resolved.ok()) {
      return absl::UnavailableError(
          absl::StrCat("rollout.addresses: ", resolved.status().message()));
    }
    // In one order whatever order the DNS answers in (data-parallel ranks
    // resolve the name each on its own and must agree on the list).
    std::sort(resolved->begin(), resolved->end());
    MRL_LOG(INFO) << entry << " resolves to " << absl::StrJoin(*resolved, ", ");
    peers.rollout_addresses.insert(peers.rollout_addresses.end(),
                                   resolved->begin(), resolved->end());
  }
  if (peers.rollout_addresses.size() > 1 && config.colocated) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rollout.addresses resolve to ", peers.rollout_addresses.size(),
        " rollout servers (", absl::StrJoin(peers.rollout_addresses, ", "),
        "); rollout.colocated needs a single one (set it to false)"));
  }
  absl::StatusOr<std::unique_ptr<RolloutClient>> rollout =
      RolloutClient::Create(peers.rollout_addresses[0], rollout_options);
  if (!rollout.ok()) return rollout.status();
  peers.rollout = *std::move(rollout);
  if (peers.rollout_addresses.size() > 1) {
    // A group waits redispatch_after_s for its server, then goes to another.
    RolloutPoolOptions pool;
    pool.client = rollout_options;
    pool.client.retry.max_elapsed =
        absl::Seconds(config.rollout_redispatch_after_s);
    pool.max_wait = absl::Seconds(config.rollout_max_wait_s);
    absl::StatusOr<std::unique_ptr<RolloutPool>> created =
        RolloutPool::Create(peers.rollout_addresses, pool);
    if (!created.ok()) return created.status();
    peers.pool = *std::move(created);
  }
  absl::StatusOr<std::unique_ptr<RewardClient>> reward = RewardClient::Create(
      config.reward_address, absl::Seconds(config.reward_timeout_s),
      reward_retry, *reward_security);
  if (!reward.ok()) return reward.status();
  peers.reward = *std::move(reward);
  return peers;
}

BenchmarkOptions FinalBenchmarkOptions(const TrainConfig& config,
                                       const std::string& run_dir) {
  BenchmarkOptions eval;
  eval.model_dir = config.model_path;
  eval.compare_base = config.final_compare_base;
  eval.datasets = config.final_datasets;
  eval.data_dir = config.eval_data_dir;
  eval.problem_field = config.problem_field;
  eval.answer_field = config.answer_field;
  eval.system_prompt = config.system_prompt;
  eval.instruction = config.instruction;
  eval.samples = config.final_samples;
  eval.temperature = config.final_temperature;
  eval.top_p = config.final_top_p;
  eval.max_tokens = config.eval_max_tokens > 0 ? config.eval_max_tokens
                                               : config.max_response_tokens;
  eval.seed = config.seed;
  eval.out_dir = run_dir + "/eval";
  return eval;
}

GenerateParams StepGenerateParams(const TrainConfig& config, int64_t step,
                                  int64_t first_prompt_index) {
  GenerateParams params;
  params.request_id = absl::StrCat(config.run_name, "-step-", step);
  params.group_size = config.group_size;
  params.temperature = config.temperature;
  params.top_p = config.top_p;
  params.top_k = config.top_k;
  params.max_tokens = config.max_response_tokens;
  params.seed = SplitMix64(config.seed ^ SplitMix64(step));
  params.first_prompt_index = static_cast<uint32_t>(first_prompt_index);
  return params;
}

SampleOptions SampleOptionsFrom(const TrainConfig& config) {
  SampleOptions options;
  options.group_size = config.group_size;
  options.advantage.norm = config.advantage;
  options.advantage.epsilon = config.advantage_epsilon;
  options.filter_zero_variance = config.filter_zero_variance;
  return options;
}

EvalOptions ValidationOptions(const TrainConfig& config, uint64_t version) {
  EvalOptions options;
  options.samples = 1;
  options.temperature = 0;  // greedy pass@1
  options.ks = {1};
  options.max_tokens = config.eval_max_tokens > 0 ? config.eval_max_tokens
                                                  : config.max_response_tokens;
  options.min_adapter_version = version;
  return options;
}

absl::StatusOr<RunData> LoadRunData(const TrainConfig& config) {
  RunData data;
  absl::StatusOr<std::vector<Problem>> problems = LoadProblems(
      config.train_path, config.problem_field, config.answer_field);
  if (!problems.ok()) return problems.status();
  data.train = *std::move(problems);
  if (!config.eval_path.empty()) {
    absl::StatusOr<std::vector<Problem>> eval = LoadProblems(
        config.eval_path, config.problem_field, config.answer_field);
    if (!eval.ok()) return eval.status();
    data.eval = *std::move(eval);
    if (config.eval_problems > 0 &&
        static_cast<int64_t>(data.eval.size()) > config.eval_problems) {
      data.eval.resize(config.eval_problems);
    }
  }
  absl::StatusOr<PromptBuilder> prompts = PromptBuilder::Create(
      config.model_path, config.system_prompt, config.instruction);
  if (!prompts.ok()) return prompts.status();
  data.prompts = std::make_unique<PromptBuilder>(*std::move(prompts));
  return data;
}

absl::StatusOr<RunDirectory> OpenRunDirectory(const TrainConfig& config,
                                              bool resume) {
  RunDirectory run;
  run.path = config.output_dir + "/" + config.run_name;
  const std::string checkpoints = run.path + "/checkpoints";
  if (HasCheckpointDirectories(checkpoints) && !resume) {
    return absl::AlreadyExistsError(absl::StrCat(
        run.path,
        " has checkpoints; pass --resume to continue it, or choose another "
        "run.name"));
  }
  std::vector<std::string> skipped;
  if (resume) run.latest_checkpoint = LatestCheckpoint(checkpoints, &skipped);
  if (resume && !run.latest_checkpoint.has_value() && !skipped.empty()) {
    // Checkpoints exist and none verifies: never restart the run silently.
    return absl::DataLossError(
        absl::StrCat("--resume: no checkpoint under ", checkpoints,
                     " verifies: ", absl::StrJoin(skipped, "; ")));
  }
  std::error_code error;
  std::filesystem::create_directories(checkpoints, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", checkpoints, ": ", error.message()));
  }
  absl::StatusOr<std::unique_ptr<RunLock>> lock = RunLock::Acquire(run.path);
  if (!lock.ok()) return lock.status();
  run.lock = *std::move(lock);
  if (resume) {
    if (absl::Status s = CheckResumeConfig(run.path + "/config.yaml", config);
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = WriteFileAtomically(run.path + "/config.yaml",
                                           TrainConfigToYaml(config));
      !s.ok()) {
    return s;
  }
  return run;
}

}  // namespace microrl::learner
