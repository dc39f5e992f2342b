#ifndef MICRORL_LEARNER_CONFIG_H_
#define MICRORL_LEARNER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/enum_names.h"
#include "common/rpc/security.h"
#include "learner/grpo_modes.h"

namespace microrl::learner {

// The learner's modes, parsed from their names when the configuration is
// loaded (an unknown name is refused there, naming the key).
enum class PublishDtype { kAuto, kFloat32, kBfloat16 };
inline constexpr EnumName<PublishDtype> kPublishDtypeNames[] = {
    {PublishDtype::kAuto, "auto"},
    {PublishDtype::kFloat32, "float32"},
    {PublishDtype::kBfloat16, "bfloat16"}};

enum class PublishVia { kAuto, kGrpc, kCudaIpc };
inline constexpr EnumName<PublishVia> kPublishViaNames[] = {
    {PublishVia::kAuto, "auto"},
    {PublishVia::kGrpc, "grpc"},
    {PublishVia::kCudaIpc, "cuda_ipc"}};

enum class OldLogprobs { kRollout, kRecompute };
inline constexpr EnumName<OldLogprobs> kOldLogprobsNames[] = {
    {OldLogprobs::kRollout, "rollout"}, {OldLogprobs::kRecompute, "recompute"}};

enum class LrSchedule { kConstant, kCosine };
inline constexpr EnumName<LrSchedule> kLrScheduleNames[] = {
    {LrSchedule::kConstant, "constant"}, {LrSchedule::kCosine, "cosine"}};

// Everything a training run needs, read from a YAML file (sections run, model,
// lora, data, rollout, reward, grpo, optim, sft, eval, distributed; see
// configs/README.md) with "section.key=value" overrides. Defaults are the
// values below.
// How the learner reaches a peer across machines: TLS (the CA that signed the
// peer's certificate; a client certificate and key for mutual TLS; the name the
// certificate carries if not the address's host) and a shared token read from
// a file. Empty: plaintext, no token.
struct PeerSecurityConfig {
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_server_name;
  std::string token_file;
};

// The client side of `peer` ("rollout" or "reward" names the keys in errors):
// the token read from token_file, the TLS files checked. What the peer's
// section leaves unset comes from the deployment's environment: the token from
// MICRORL_AUTH_TOKEN, the CA from MICRORL_TLS_CA (docker compose sets both).
absl::StatusOr<rpc::ClientSecurity> ResolvePeerSecurity(
    const PeerSecurityConfig& peer, const std::string& section);

struct TrainConfig {
  // run
  std::string run_name = "run";
  std::string output_dir = "runs";  // the run writes to output_dir/run_name
  uint64_t seed = 1;
  int64_t max_steps = 100;
  double time_budget_hours =
      24;  // wall clock for the whole run, resumes included
  int64_t checkpoint_every = 50;  // and at the end or stop
  int64_t keep_checkpoints = 2;   // older ones are deleted (0: keep all)

  // model
  std::string model_path;
  // Where `learner study` and deploy/fetch_model.sh download model_path from
  // when it is missing (a Hugging Face Hub id and a commit); training never
  // reads them.
  std::string model_hub_id;
  std::string model_revision;
  std::string device = "cpu";
  std::string dtype = "auto";  // base weights: auto, float32, bfloat16, float16
  bool gradient_checkpointing = true;
  // Caps what this process's CUDA caching allocator may reserve, GiB (0: no
  // cap), so rollout server and learner share one GPU within a budget.
  double gpu_memory_gib = 0;

  // lora
  int64_t lora_rank = 64;
  double lora_alpha = 128;
  std::vector<std::string> lora_targets = {"q_proj",   "k_proj",    "v_proj",
                                           "o_proj",   "gate_proj", "up_proj",
                                           "down_proj"};
  bool lora_rslora = false;
  // A PEFT adapter to start from (e.g. `learner sft`'s), instead of a fresh
  // one.
  std::string lora_init;

  // data
  std::string train_path;
  std::string problem_field = "problem";
  std::string answer_field = "answer";
  std::string completion_field = "completion";  // learner sft: the target text
  std::string system_prompt;
  // The user message; "{problem}" is replaced by the problem.
  std::string instruction =
      "{problem}\n\nPlease reason step by step, and put your final answer "
      "within "
      "\\boxed{}.";

  // rollout
  std::string rollout_address = "127.0.0.1:50051";
  // Several rollout servers (docs/scaling.md, Mode B): each step's groups are
  // spread over them and every adapter is loaded into all; rollout.address is
  // then not used. "dns:name:port" stands for every address the name resolves
  // to at start (a headless Service, docker compose --scale). Empty:
  // rollout.address alone.
  std::vector<std::string> rollout_addresses;
  // How long a group waits for an unreachable server (of rollout.addresses)
  // before it is sent to another one.
  double rollout_redispatch_after_s = 30;
  int64_t prompts_per_step = 8;
  int64_t group_size = 8;
  int64_t max_response_tokens = 3584;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;
  // Time-share one GPU with the rollout server (Sleep before the update, Wake
  // after).
  bool colocated = false;
  // dtype of the adapter weights sent to the rollout server: auto (bfloat16
  // when the learner's model runs in bfloat16, else float32), float32 or
  // bfloat16. A rollout server keeps them in its model's dtype.
  PublishDtype publish_dtype = PublishDtype::kAuto;
  // How the adapter reaches the rollout server: auto (CUDA IPC when the
  // learner is on a GPU and the rollout server on loopback, falling back to
  // gRPC for good if the server cannot open it), grpc (streamed bytes) or
  // cuda_ipc (no fallback).
  PublishVia publish_via = PublishVia::kAuto;
  double generate_timeout_s = 3600;
  // How long to keep retrying a rollout server that is unreachable (restarting)
  // before the run checkpoints and fails.
  double rollout_max_wait_s = 600;
  // Bounded-staleness rollouts (docs/scaling.md, Mode B): step n's groups are
  // generated with the adapter of step n - 1 - max_staleness (never older
  // than the last checkpoint's, nor the run's start), so generation of the
  // next max_staleness steps overlaps each update. 0: synchronous.
  int64_t max_staleness = 0;
  PeerSecurityConfig rollout_security;

  // reward
  std::string reward_address = "127.0.0.1:50052";
  double reward_timeout_s = 300;
  double reward_max_wait_s = 600;  // the same for the reward service
  PeerSecurityConfig reward_security;

  // grpo
  // group (GRPO), none (Dr. GRPO) or batch
  AdvantageNorm advantage = AdvantageNorm::kGroupStd;
  double advantage_epsilon = 1e-6;
  bool filter_zero_variance = false;
  double clip_low = 0.2;
  double clip_high = 0.2;
  double dual_clip = 3.0;  // <= 1: off
  LossAggregation loss_aggregation = LossAggregation::kTokenMean;
  double loss_horizon =
      0;  // seq-mean-token-sum-norm's constant (0: max_response_tokens)
  double kl_coef = 0;
  KlEstimator kl_estimator = KlEstimator::kK3;
  double entropy_coef = 0;
  int64_t mini_batches = 1;  // optimizer steps per epoch over the rollout batch
  int64_t epochs = 1;        // passes over the rollout batch
  OldLogprobs old_logprobs = OldLogprobs::kRollout;  // rollout or recompute
  // Tokens per forward/backward (packed, or padded with packing off).
  int64_t micro_batch_tokens = 8192;
  bool packing = true;        // micro-batches as packed rows (policy_update.h)
  bool share_prompts = true;  // a packed micro-batch runs each prompt once
  // Off-policy correction of the policy loss (grpo.h, OffPolicyOptions):
  // truncated importance sampling with this cap (0: off; -1, the default: 2
  // with rollout.max_staleness > 0, else off), and masking of tokens or
  // sequences whose ratio is outside [is_mask_low, is_mask_high].
  double tis_cap = -1;
  IsMask is_mask = IsMask::kNone;
  double is_mask_low = 0.5;
  double is_mask_high = 2.0;

  // optim
  double lr = 1e-5;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double weight_decay = 0.0;
  LrSchedule schedule = LrSchedule::kConstant;  // constant or cosine
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;   // cosine: the final lr / lr
  double max_grad_norm = 1.0;  // <= 0: no clipping

  // sft (learner sft): completions per optimizer step; the run's max_steps,
  // lr and schedule apply.
  int64_t sft_batch_size = 32;

  // eval
  std::string eval_path;        // validation JSONL (e.g. MATH500)
  int64_t eval_every = 0;       // steps (0: never during training)
  int64_t eval_problems = 0;    // first N problems (0: all)
  int64_t eval_max_tokens = 0;  // 0: max_response_tokens
  // At the end of the run: pass@k (k in 1, 8, 16 up to final_samples) on these
  // datasets (names in eval_data_dir, or name=path), into <run>/eval/.
  std::vector<std::string> final_datasets;
  std::string eval_data_dir;
  int64_t final_samples = 16;
  double final_temperature = 0.6;
  double final_top_p = 0.95;
  bool final_compare_base = true;

  // distributed: data-parallel ranks (docs/scaling.md, Mode A), launched by
  // torchrun or Slurm (their environment says the rank and world size).
  // Join the job the launcher's environment describes (false: run alone even
  // under a launcher).
  bool distributed_enabled = true;
  // A collective that waits longer than this for its peers fails the run (a
  // rank died or hangs).
  double distributed_timeout_s = 600;
  // Each rank has its own rollout server, at rollout.address's port plus the
  // rank's local rank (false: every rank uses rollout.address as it is).
  bool rollout_port_per_rank = true;
  // How long the other ranks wait while rank 0 runs a validation.
  double distributed_eval_wait_s = 7200;
  // Compare the ranks' adapter weights (SHA-256) at every checkpoint and every
  // this many steps (0: at checkpoints only).
  int64_t distributed_check_every = 0;
};

// Reads `path` (YAML; a top-level `base: other.yaml` is read first, relative to
// `path`), then applies `overrides` ("section.key=value", YAML scalars or
// flow lists). Errors name the file and line, or the override.
absl::StatusOr<TrainConfig> LoadTrainConfig(
    const std::string& path, const std::vector<std::string>& overrides);

// The same from YAML text ("" for defaults only); `label` names it in errors.
absl::StatusOr<TrainConfig> ParseTrainConfig(
    const std::string& yaml, const std::string& label,
    const std::vector<std::string>& overrides);

// Semantic checks (ranges, names of modes); errors name the key.
absl::Status ValidateTrainConfig(const TrainConfig& config);

// The resolved configuration as YAML (every key, sorted by section).
std::string TrainConfigToYaml(const TrainConfig& config);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_CONFIG_H_
