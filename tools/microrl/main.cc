// microrl: the project's command-line tool for offline work and checks of
// running services. `microrl --help` (kUsage) lists every command.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/base/flag_usage.h"
#include "common/rpc/security.h"
#include "tools/microrl/logprobs_command.h"
#include "tools/microrl/status_command.h"
#include "tools/microrl/tokenizer_commands.h"

ABSL_FLAG(std::string, rollout, "", "status: host:port of the rollout server.");
ABSL_FLAG(std::string, reward, "", "status: host:port of the reward service.");
ABSL_FLAG(std::string, learner, "", "status: host:port of the learner.");
ABSL_FLAG(int, timeout_ms, 2000, "status: time limit per RPC, ms.");
ABSL_FLAG(std::string, tls_ca, "",
          "status: PEM CA of services serving TLS (empty: plaintext).");
ABSL_FLAG(std::string, tls_server_name, "",
          "status: name the services' certificates carry, if not the host.");
ABSL_FLAG(std::string, auth_token_file, "",
          "status: file with the token of services that require one (default: "
          "the environment variable MICRORL_AUTH_TOKEN).");
ABSL_FLAG(std::string, model, "", "logprobs: Hugging Face model directory.");
ABSL_FLAG(std::string, adapter, "",
          "logprobs: PEFT LoRA adapter directory (optional).");
ABSL_FLAG(std::string, device, "cpu", "logprobs: cpu, cuda or cuda:N.");
ABSL_FLAG(double, temperature, 1.0,
          "logprobs: log-probs of logits / temperature.");
ABSL_FLAG(int, batch_lines, 16, "logprobs: input lines scored as one batch.");
ABSL_FLAG(std::string, tokenizer, "",
          "tokenize, detokenize: path of a tokenizer.json.");
ABSL_FLAG(bool, add_special, false,
          "tokenize: add the post-processor's special tokens.");
ABSL_FLAG(bool, skip_special, false, "detokenize: leave special tokens out.");
ABSL_FLAG(
    std::string, tokenizer_config, "",
    "render-chat: tokenizer_config.json (chat template, bos/eos tokens).");
ABSL_FLAG(
    std::string, template_file, "",
    "render-chat: a .jinja chat template to use instead of the config's.");

namespace {

constexpr char kUsage[] =
    "microrl <command> [flags]\n"
    "\n"
    "commands:\n"
    "  status       health and GetInfo of running services; exit 0 only if "
    "all are SERVING\n"
    "               (--rollout, --reward, --learner: host:port of each; "
    "--timeout_ms;\n"
    "               --tls_ca, --tls_server_name, --auth_token_file)\n"
    "  logprobs     per-token log-probs and entropies of sequences under a "
    "model (and adapter):\n"
    "               JSON lines {\"ids\": [...], \"start\": N} on stdin -> "
    "{\"logprobs\", \"entropy\"}\n"
    "               (--model, --adapter, --device, --temperature, "
    "--batch_lines)\n"
    "  tokenize     {\"text\": ...} lines -> {\"ids\": [...]} "
    "(--tokenizer, --add_special)\n"
    "  detokenize   {\"ids\": [...]} lines -> {\"text\": ...} "
    "(--tokenizer, --skip_special)\n"
    "  render-chat  {\"messages\": [...], ...} lines -> {\"text\": ...} "
    "through a chat template\n"
    "               (--tokenizer_config, --template_file)\n"
    "\n"
    "Bad input exits 2 naming the line; other failures exit 1.\n";

int Status() {
  microrl::cli::StatusCommandOptions options;
  options.rollout_address = absl::GetFlag(FLAGS_rollout);
  options.reward_address = absl::GetFlag(FLAGS_reward);
  options.learner_address = absl::GetFlag(FLAGS_learner);
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  options.security.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.security.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  if (const std::string file = absl::GetFlag(FLAGS_auth_token_file);
      !file.empty()) {
    absl::StatusOr<std::string> token = microrl::rpc::ReadTokenFile(file);
    if (!token.ok()) {
      std::cerr << "microrl status: --auth_token_file: "
                << token.status().message() << "\n";
      return 2;
    }
    options.security.token = *token;
  } else if (const char* env = std::getenv("MICRORL_AUTH_TOKEN");
             env != nullptr && *env != '\0') {
    options.security.token = env;  // the deployment's shared token
  }
  if (const char* ca = std::getenv("MICRORL_TLS_CA");
      options.security.tls_ca_file.empty() && ca != nullptr && *ca != '\0') {
    options.security.tls_ca_file = ca;  // the deployment's CA
  }
  if (options.rollout_address.empty() && options.reward_address.empty() &&
      options.learner_address.empty()) {
    std::fprintf(stderr,
                 "microrl status: give at least one of --rollout, --reward, "
                 "--learner\n");
    return 2;
  }
  const absl::Status status =
      microrl::cli::RunStatusCommand(options, std::cout);
  if (!status.ok()) {
    std::fprintf(stderr, "microrl status: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

// Prints a command's error and returns its exit code: 2 for bad input, 1 else.
int Finish(const char* command, const absl::Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "microrl %s: %s\n", command,
               std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int Logprobs() {
  microrl::cli::LogprobsCommandOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.adapter_dir = absl::GetFlag(FLAGS_adapter);
  options.device = absl::GetFlag(FLAGS_device);
  options.temperature = absl::GetFlag(FLAGS_temperature);
  options.batch_lines = absl::GetFlag(FLAGS_batch_lines);
  return Finish("logprobs",
                microrl::cli::RunLogprobsCommand(options, std::cin, std::cout));
}

// absl flags are spelled with '_'; accept '-' in flag names too.
std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (std::string& arg : args) {
    if (arg.rfind("--", 0) != 0) continue;
    const size_t end = std::min(arg.find('='), arg.size());
    for (size_t i = 2; i < end; ++i) {
      if (arg[i] == '-') arg[i] = '_';
    }
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  microrl::SetUpFlagUsage(kUsage);
  std::vector<std::string> normalized = NormalizeFlagNames(argc, argv);
  std::vector<char*> raw;
  for (std::string& arg : normalized) raw.push_back(arg.data());
  const std::vector<char*> args =
      absl::ParseCommandLine(static_cast<int>(raw.size()), raw.data());
  if (args.size() < 2) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  const std::string command = args[1];
  if (args.size() > 2) {
    std::fprintf(stderr, "microrl %s: unexpected argument '%s'\n",
                 command.c_str(), args[2]);
    return 2;
  }
  if (command == "status") return Status();
  if (command == "logprobs") return Logprobs();
  if (command == "tokenize") {
    return Finish("tokenize",
                  microrl::cli::RunTokenizeCommand(
                      absl::GetFlag(FLAGS_tokenizer),
                      absl::GetFlag(FLAGS_add_special), std::cin, std::cout));
  }
  if (command == "render-chat" || command == "render_chat") {
    return Finish("render-chat",
                  microrl::cli::RunRenderChatCommand(
                      absl::GetFlag(FLAGS_tokenizer_config),
                      absl::GetFlag(FLAGS_template_file), std::cin, std::cout));
  }
  if (command == "detokenize") {
    return Finish("detokenize",
                  microrl::cli::RunDetokenizeCommand(
                      absl::GetFlag(FLAGS_tokenizer),
                      absl::GetFlag(FLAGS_skip_special), std::cin, std::cout));
  }
  std::fprintf(stderr, "microrl: unknown command '%s'\n\n%s", command.c_str(),
               kUsage);
  return 2;
}
