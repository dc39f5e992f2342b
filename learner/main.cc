// learner: trains LoRA adapters with GRPO against a rollout server and a reward
// service, serving GetInfo (run state, progress, peers) and /metrics meanwhile.
//
//   learner --config=run.yaml [--set="optim.lr=1e-6;rollout.group_size=8"]
//   [--resume] learner                      (no run: serves GetInfo, state
//   IDLE) learner eval --model=DIR [--adapter=PEFT_DIR] --datasets=aime24,amc23
//   learner report RUN_OR_STUDY_DIR [--out=DIR]
//   learner study STUDY.yaml [--dry_run] [--no_retry_failed] [--no_report]
//   ...
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/file.h"
#include "common/base/flag_usage.h"
#include "common/base/logging.h"
#include "common/base/memory.h"
#include "common/base/net.h"
#include "common/base/passing_thread.h"
#include "common/base/signals.h"
#include "common/device/device.h"
#include "common/distributed/launch.h"
#include "common/rpc/server_flags.h"
#include "common/rpc/server_main.h"
#include "learner/config.h"
#include "learner/data_parallel.h"
#include "learner/eval_command.h"
#include "learner/learner_service.h"
#include "learner/peer_monitor.h"
#include "learner/sft.h"
#include "learner/trainer.h"
#include "learner/training_status.h"

ABSL_FLAG(std::string, device, "cpu",
          "Device to train on when no --config says: cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, rollout_address, "127.0.0.1:50051",
          "host:port of the rollout server (empty: none); a --config's "
          "rollout.address wins.");
ABSL_FLAG(std::string, reward_address, "127.0.0.1:50052",
          "host:port of the reward service (empty: none); a --config's "
          "reward.address wins.");
ABSL_FLAG(int, peer_probe_interval_ms, 2000,
          "How often to probe the peers' health, ms.");
ABSL_FLAG(std::string, config, "",
          "Training run configuration (YAML); without it no run starts.");
ABSL_FLAG(std::string, set, "",
          "Configuration overrides, \"section.key=value\" separated by ';'.");
ABSL_FLAG(bool, resume, false,
          "Continue the run from its newest checkpoint (else a run directory "
          "with checkpoints is refused).");
// learner eval
ABSL_FLAG(std::string, model, "",
          "eval: model directory (tokenizer, chat template).");
ABSL_FLAG(std::string, adapter, "",
          "eval: PEFT adapter directory (empty: the served one).");
ABSL_FLAG(bool, compare_base, false,
          "eval: also evaluate the base model (LoRA off).");
ABSL_FLAG(
    std::string, datasets, "aime24,aime25,amc23",
    "eval: comma-separated names (<data_dir>/<name>.jsonl) or name=path.");
ABSL_FLAG(std::string, data_dir, "", "eval: directory of the named datasets.");
ABSL_FLAG(int64_t, problems, 0,
          "eval: first N problems of each dataset (0: all).");
ABSL_FLAG(int64_t, samples, 16, "eval: completions per problem.");
ABSL_FLAG(double, temperature, 0.6, "eval: sampling temperature.");
ABSL_FLAG(double, top_p, 0.95, "eval: nucleus sampling.");
ABSL_FLAG(int64_t, max_tokens, 3584, "eval: completion tokens.");
ABSL_FLAG(std::string, ks, "1,8,16", "eval: the k of pass@k, comma-separated.");
ABSL_FLAG(std::string, out, "", "eval: directory for eval.json and eval.md.");
ABSL_FLAG(std::string, openai_base_url, "",
          "eval: evaluate this OpenAI-compatible server instead of the "
          "rollout server (e.g. http://127.0.0.1:8000/v1: a microrl "
          "rollout_server's --openai_port, or vLLM); prompts go as token ids "
          "of --model's tokenizer.");
ABSL_FLAG(std::string, openai_model, "",
          "eval: the model to evaluate at --openai_base_url (empty: the last "
          "its /v1/models lists; on a microrl server, the newest adapter).");
ABSL_FLAG(std::string, openai_base_model, "",
          "eval: with --compare_base, the base model's name at "
          "--openai_base_url.");
ABSL_FLAG(std::string, openai_api_key_file, "",
          "eval: file holding the API key for --openai_base_url (unset: "
          "$OPENAI_API_KEY, if set).");
ABSL_FLAG(std::string, openai_ca, "",
          "eval: PEM CA for an https --openai_base_url (unset: the system's).");

namespace {

absl::Status ValidatePeerAddress(const std::string& flag,
                                 const std::string& address) {
  if (address.empty()) return absl::OkStatus();
  absl::StatusOr<microrl::HostPort> parsed = microrl::ParseHostPort(address);
  if (!parsed.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", parsed.status().message()));
  return absl::OkStatus();
}

// --config with the --set overrides; errors name --config.
absl::StatusOr<microrl::learner::TrainConfig> ConfigFromFlags() {
  std::vector<std::string> overrides;
  for (absl::string_view o :
       absl::StrSplit(absl::GetFlag(FLAGS_set), ';', absl::SkipEmpty()))
    overrides.emplace_back(o);
  absl::StatusOr<microrl::learner::TrainConfig> config =
      microrl::learner::LoadTrainConfig(absl::GetFlag(FLAGS_config), overrides);
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--config: ", config.status().message()));
  }
  return config;
}

int Eval(const char* component) {
  microrl::learner::EvalCommandOptions o;
  microrl::learner::BenchmarkOptions& b = o.benchmarks;
  b.model_dir = absl::GetFlag(FLAGS_model);
  o.adapter_dir = absl::GetFlag(FLAGS_adapter);
  b.compare_base = absl::GetFlag(FLAGS_compare_base);
  for (absl::string_view d :
       absl::StrSplit(absl::GetFlag(FLAGS_datasets), ',', absl::SkipEmpty()))
    b.datasets.emplace_back(d);
  b.data_dir = absl::GetFlag(FLAGS_data_dir);
  b.problems = absl::GetFlag(FLAGS_problems);
  b.samples = absl::GetFlag(FLAGS_samples);
  b.temperature = absl::GetFlag(FLAGS_temperature);
  b.top_p = absl::GetFlag(FLAGS_top_p);
  b.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  b.ks.clear();
  for (absl::string_view k :
       absl::StrSplit(absl::GetFlag(FLAGS_ks), ',', absl::SkipEmpty())) {
    int64_t value = 0;
    if (!absl::SimpleAtoi(k, &value) || value < 1) {
      return microrl::rpc::UsageError(
          component,
          absl::InvalidArgumentError(absl::StrCat("--ks: bad k \"", k, "\"")));
    }
    b.ks.push_back(value);
  }
  o.rollout_address = absl::GetFlag(FLAGS_rollout_address);
  o.reward_address = absl::GetFlag(FLAGS_reward_address);
  o.openai.base_url = absl::GetFlag(FLAGS_openai_base_url);
  o.openai.model = absl::GetFlag(FLAGS_openai_model);
  o.openai.base_model = absl::GetFlag(FLAGS_openai_base_model);
  o.openai.tls_ca_file = absl::GetFlag(FLAGS_openai_ca);
  if (const std::string file = absl::GetFlag(FLAGS_openai_api_key_file);
      !file.empty()) {
    absl::StatusOr<std::string> key = microrl::ReadFileToString(file);
    if (!key.ok()) {
      return microrl::rpc::UsageError(
          component, absl::InvalidArgumentError(absl::StrCat(
                         "--openai_api_key_file: ", key.status().message())));
    }
    o.openai.api_key = std::string(absl::StripAsciiWhitespace(*key));
  } else if (const char* env = std::getenv("OPENAI_API_KEY");
             env != nullptr && *env != '\0') {
    o.openai.api_key = env;
  }
  b.out_dir = absl::GetFlag(FLAGS_out);
  // The deployment's token and CA (MICRORL_AUTH_TOKEN, MICRORL_TLS_CA), unless
  // a --config names its own.
  for (auto [security, section] : {std::pair{&o.rollout_security, "rollout"},
                                   std::pair{&o.reward_security, "reward"}}) {
    absl::StatusOr<microrl::rpc::ClientSecurity> resolved =
        microrl::learner::ResolvePeerSecurity({}, section);
    if (!resolved.ok())
      return microrl::rpc::UsageError(component, resolved.status());
    *security = *resolved;
  }
  // The training defaults for the prompt, unless a --config gives its own.
  microrl::learner::TrainConfig defaults;
  b.instruction = defaults.instruction;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    absl::StatusOr<microrl::learner::TrainConfig> config =
        microrl::learner::LoadTrainConfig(absl::GetFlag(FLAGS_config), {});
    if (!config.ok())
      return microrl::rpc::UsageError(component, config.status());
    b.system_prompt = config->system_prompt;
    b.instruction = config->instruction;
    b.problem_field = config->problem_field;
    absl::StatusOr<microrl::rpc::ClientSecurity> rollout_security =
        microrl::learner::ResolvePeerSecurity(config->rollout_security,
                                              "rollout");
    if (!rollout_security.ok())
      return microrl::rpc::UsageError(component, rollout_security.status());
    absl::StatusOr<microrl::rpc::ClientSecurity> reward_security =
        microrl::learner::ResolvePeerSecurity(config->reward_security,
                                              "reward");
    if (!reward_security.ok())
      return microrl::rpc::UsageError(component, reward_security.status());
    o.rollout_security = *rollout_security;
    o.reward_security = *reward_security;
    b.answer_field = config->answer_field;
    if (b.model_dir.empty()) b.model_dir = config->model_path;
  }
  if (b.model_dir.empty()) {
    return microrl::rpc::UsageError(
        component, absl::InvalidArgumentError("--model: is required"));
  }
  absl::Status status = microrl::learner::RunEvalCommand(o);
  if (!status.ok()) {
    std::cerr << component << " eval: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

// `learner study`: a grid of runs, each an ordinary learner run started by
// learner/study/study.py (a process supervisor: services per run, resume,
// state, progress); its flags are the script's, so they are passed on unparsed.
int Study(const char* component, int argc, char** argv) {
  if (std::string(MICRORL_REPORT_PYTHON).empty()) {
    std::cerr << component
              << " study: this build has no Python venv (MICRORL_PYTHON)\n";
    return 1;
  }
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    std::cerr << component
              << " study: cannot find this program: " << std::strerror(errno)
              << "\n";
    return 1;
  }
  self[n] = '\0';
  std::vector<std::string> args = {MICRORL_REPORT_PYTHON, MICRORL_STUDY_SCRIPT,
                                   std::string("--learner=") + self};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  std::vector<char*> exec_args;
  for (std::string& a : args) exec_args.push_back(a.data());
  exec_args.push_back(nullptr);
  execv(exec_args[0], exec_args.data());
  std::cerr << component << " study: cannot run " << MICRORL_REPORT_PYTHON
            << ": " << std::strerror(errno) << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr char kComponent[] = "learner";
  // Before the termination signals are blocked: the mask would pass through
  // exec.
  if (argc >= 2 && std::string(argv[1]) == "study") {
    return Study(kComponent, argc, argv);
  }
  const bool keep_freed_memory = microrl::KeepFreedMemory();
  microrl::BlockTerminationSignals();
  microrl::SetLogComponent(kComponent);
  MRL_LOG(INFO) << "freed memory: "
                << (keep_freed_memory ? "kept for reuse"
                                      : "returned to the kernel");
  microrl::SetUpFlagUsage(
      "Trains LoRA adapters with GRPO against a rollout server and a reward "
      "service (learner --config=run.yaml), or evaluates them (learner eval); "
      "learner report DIR draws a run's or a study's figures and tables; "
      "learner "
      "study STUDY.yaml runs a grid of presets (learner study --help).");
  microrl::rpc::SetServerFlagDefaults(50053, 9403);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() >= 2 && std::string(positional[1]) == "sft") {
    if (positional.size() > 2 || absl::GetFlag(FLAGS_config).empty()) {
      return microrl::rpc::UsageError(
          kComponent, absl::InvalidArgumentError(
                          "usage: learner sft --config=sft.yaml [--set=...]"));
    }
    absl::StatusOr<microrl::learner::TrainConfig> config = ConfigFromFlags();
    if (!config.ok())
      return microrl::rpc::UsageError(kComponent, config.status());
    absl::Status status = microrl::learner::RunSft(*config);
    if (!status.ok()) {
      std::cerr << kComponent << " sft: " << status.message() << "\n";
      return 1;
    }
    return 0;
  }
  if (positional.size() >= 2 && std::string(positional[1]) == "report") {
    if (positional.size() != 3) {
      return microrl::rpc::UsageError(
          kComponent,
          absl::InvalidArgumentError(
              "usage: learner report RUN_OR_STUDY_DIR [--out=DIR]"));
    }
    // The figures are drawn by matplotlib: the report is a Python program in
    // the venv this build uses.
    if (std::string(MICRORL_REPORT_PYTHON).empty()) {
      std::cerr << kComponent
                << " report: this build has no Python venv (MICRORL_PYTHON); "
                   "run python3 "
                << MICRORL_REPORT_SCRIPT
                << " DIR with matplotlib and pyyaml installed\n";
      return 1;
    }
    std::vector<std::string> args = {MICRORL_REPORT_PYTHON,
                                     MICRORL_REPORT_SCRIPT, positional[2]};
    if (!absl::GetFlag(FLAGS_out).empty()) {
      args.push_back("--out=" + absl::GetFlag(FLAGS_out));
    }
    std::vector<char*> exec_args;
    for (std::string& a : args) exec_args.push_back(a.data());
    exec_args.push_back(nullptr);
    microrl::UnblockTerminationSignals();  // or the report could not be stopped
    execv(exec_args[0], exec_args.data());
    std::cerr << kComponent << " report: cannot run " << MICRORL_REPORT_PYTHON
              << ": " << std::strerror(errno) << "\n";
    return 1;
  }
  if (positional.size() >= 2 && std::string(positional[1]) == "eval") {
    if (positional.size() > 2) {
      return microrl::rpc::UsageError(
          kComponent,
          absl::InvalidArgumentError("eval takes no further arguments"));
    }
    // An evaluation saves nothing until it ends (its files are written
    // atomically): SIGTERM and Ctrl-C end it at once, as their default action;
    // its calls in flight are cancelled by the servers when the connection
    // closes.
    microrl::UnblockTerminationSignals();
    return Eval(kComponent);
  }

  absl::StatusOr<microrl::rpc::ServerMainOptions> flags =
      microrl::rpc::ServerMainOptionsFromFlags();
  if (!flags.ok()) return microrl::rpc::UsageError(kComponent, flags.status());
  microrl::rpc::ServerMainOptions server = *std::move(flags);
  std::string rollout_address = absl::GetFlag(FLAGS_rollout_address);
  std::string reward_address = absl::GetFlag(FLAGS_reward_address);
  std::string device_name = absl::GetFlag(FLAGS_device);
  const int probe_ms = absl::GetFlag(FLAGS_peer_probe_interval_ms);

  std::optional<microrl::learner::TrainConfig> config;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    absl::StatusOr<microrl::learner::TrainConfig> loaded = ConfigFromFlags();
    if (!loaded.ok())
      return microrl::rpc::UsageError(kComponent, loaded.status());
    config = *loaded;
    rollout_address = config->rollout_address;
    // A data-parallel rank serves on its own ports (+ its local rank, so the
    // ranks of one node do not collide), labels its metrics with its rank and
    // watches its own rollout server. Errors in the launcher's variables are
    // the trainer's to report.
    absl::StatusOr<microrl::distributed::LaunchEnv> launch =
        microrl::distributed::ReadLaunchEnv();
    if (config->distributed_enabled && launch.ok() && launch->distributed()) {
      if (server.port != 0) server.port += launch->local_rank;
      if (server.metrics_port != 0) server.metrics_port += launch->local_rank;
      server.metrics_labels = {{"rank", absl::StrCat(launch->rank)}};
      if (!server.ready_file.empty())
        absl::StrAppend(&server.ready_file, ".rank", launch->rank);
      absl::StatusOr<microrl::learner::TrainConfig> rank =
          microrl::learner::RankConfig(*config, *launch);
      rollout_address = rank.ok() ? rank->rollout_address : rollout_address;
    }
    reward_address = config->reward_address;
    device_name = config->device;
  }
  for (const absl::Status& status :
       {microrl::rpc::CheckNoPositionalArguments(positional),
        microrl::rpc::ValidateServerMainOptions(server),
        ValidatePeerAddress("rollout_address", rollout_address),
        ValidatePeerAddress("reward_address", reward_address),
        probe_ms >= 100 ? absl::OkStatus()
                        : absl::InvalidArgumentError(
                              "--peer_probe_interval_ms: must be >= 100")}) {
    if (!status.ok()) return microrl::rpc::UsageError(kComponent, status);
  }
  absl::StatusOr<microrl::device::Device> device =
      microrl::device::ResolveDevice(device_name);
  if (!device.ok()) {
    return microrl::rpc::UsageError(
        kComponent, absl::InvalidArgumentError(
                        absl::StrCat("--device: ", device.status().message())));
  }

  auto registry = std::make_shared<prometheus::Registry>();
  microrl::rpc::ProcessIdentity identity(kComponent);
  microrl::learner::TrainingStatus status;
  std::unique_ptr<microrl::learner::Trainer> trainer;
  if (config.has_value()) {
    // Loads the model off this thread: the update runs on `training` below,
    // and LibTorch's OpenMP workers left here would slow it
    // (common/base/passing_thread.h).
    absl::StatusOr<std::unique_ptr<microrl::learner::Trainer>> created =
        microrl::RunOnPassingThread([&] {
          return microrl::learner::Trainer::Create(
              *config, absl::GetFlag(FLAGS_resume), *registry, status);
        });
    if (!created.ok()) {
      std::cerr << kComponent << ": " << created.status().message() << "\n";
      return 1;
    }
    trainer = *std::move(created);
  }
  // The peer monitor probes with the clients' TLS and token: the run's, or
  // without a run the deployment's (MICRORL_AUTH_TOKEN, MICRORL_TLS_CA).
  const microrl::learner::PeerSecurityConfig none;
  const microrl::rpc::ClientSecurity rollout_security =
      microrl::learner::ResolvePeerSecurity(
          config.has_value() ? config->rollout_security : none, "rollout")
          .value_or(microrl::rpc::ClientSecurity{});
  const microrl::rpc::ClientSecurity reward_security =
      microrl::learner::ResolvePeerSecurity(
          config.has_value() ? config->reward_security : none, "reward")
          .value_or(microrl::rpc::ClientSecurity{});
  microrl::learner::PeerMonitor peers(
      {{"rollout", rollout_address, "microrl.v1.Rollout", rollout_security},
       {"reward", reward_address, "microrl.v1.Reward", reward_security}},
      absl::Milliseconds(probe_ms),
      /*timeout=*/absl::Milliseconds(500), *registry);
  microrl::learner::LearnerService service({*device}, identity, peers, status);
  absl::Status run_status;
  std::thread training;
  if (trainer != nullptr) {
    training = std::thread([&] {
      run_status = trainer->Run();
      // The run is over: stop serving too.
      microrl::RequestTermination();
    });
  }
  const int code = microrl::rpc::RunServer(
      server, {{&service, "microrl.v1.Learner"}}, registry, identity, [&] {
        if (trainer != nullptr) trainer->Stop();
        if (training.joinable()) training.join();
        peers.Stop();
      });
  if (training.joinable()) {
    trainer->Stop();
    training.join();
  }
  microrl::ExitWithoutStaticDestructors(code != 0         ? code
                                        : run_status.ok() ? 0
                                                          : 1);
}
