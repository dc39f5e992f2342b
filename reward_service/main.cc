// reward_service: scores completions for format and answer correctness, as a
// gRPC service, or offline:  reward_service score --in=FILE.jsonl
// --out=FILE.jsonl
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "common/base/flag_usage.h"
#include "common/base/logging.h"
#include "common/base/signals.h"
#include "common/rpc/server_flags.h"
#include "common/rpc/server_main.h"
#include "reward_service/reward_service.h"
#include "reward_service/score_command.h"

ABSL_FLAG(int, item_deadline_ms, 5000,
          "Default time limit per scored item, ms.");
ABSL_FLAG(int, max_batch_items, 8192, "Largest Score batch accepted, items.");
ABSL_FLAG(double, format_weight, 0.1,
          "Weight of the <think> format component.");
ABSL_FLAG(double, correct_weight, 1.0,
          "Weight of the answer-correctness component.");
ABSL_FLAG(
    std::string, answer_phrases, "final answer|answer",
    "'|'-separated phrases introducing a final answer, tried in order when "
    "there is no \\boxed{} (empty: \\boxed{} and bare answers only, no "
    "free-text fallbacks; see docs/reward.md).");
ABSL_FLAG(int, threads, 0,
          "Threads scoring a batch (0: one per hardware thread).");
ABSL_FLAG(std::string, in, "",
          "score: input JSONL {id, completion, ground_truth[, prompt]}.");
ABSL_FLAG(std::string, out, "", "score: output JSONL.");
ABSL_FLAG(std::string, mode, "completion",
          "score: completion (format + answer) or answer (a bare answer).");

namespace {

constexpr char kComponent[] = "reward_service";

absl::Status ValidateRewardFlags() {
  if (absl::GetFlag(FLAGS_item_deadline_ms) <= 0) {
    return absl::InvalidArgumentError("--item_deadline_ms: must be positive");
  }
  const int max_batch = absl::GetFlag(FLAGS_max_batch_items);
  if (max_batch < 1 || max_batch > (1 << 20)) {
    return absl::InvalidArgumentError(
        "--max_batch_items: must be in [1, 1048576]");
  }
  if (absl::GetFlag(FLAGS_format_weight) < 0 ||
      absl::GetFlag(FLAGS_correct_weight) < 0) {
    return absl::InvalidArgumentError(
        "--format_weight and --correct_weight: must be >= 0");
  }
  if (absl::GetFlag(FLAGS_threads) < 0) {
    return absl::InvalidArgumentError("--threads: must be >= 0");
  }
  return absl::OkStatus();
}

microrl::reward::ScoreOptions ScoringFromFlags() {
  microrl::reward::ScoreOptions scoring;
  scoring.format_weight = absl::GetFlag(FLAGS_format_weight);
  scoring.correct_weight = absl::GetFlag(FLAGS_correct_weight);
  scoring.item_deadline =
      absl::Milliseconds(absl::GetFlag(FLAGS_item_deadline_ms));
  scoring.extraction.fallback_phrases.clear();
  for (absl::string_view phrase : absl::StrSplit(
           absl::GetFlag(FLAGS_answer_phrases), '|', absl::SkipEmpty())) {
    scoring.extraction.fallback_phrases.emplace_back(phrase);
  }
  return scoring;
}

int Score() {
  microrl::reward::ScoreCommandOptions options;
  options.in_path = absl::GetFlag(FLAGS_in);
  options.out_path = absl::GetFlag(FLAGS_out);
  options.mode = absl::GetFlag(FLAGS_mode);
  options.scoring = ScoringFromFlags();
  options.threads = absl::GetFlag(FLAGS_threads);
  const absl::Status status = microrl::reward::RunScoreCommand(options);
  if (status.ok()) return 0;
  microrl::rpc::UsageError("reward_service score", status);
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  microrl::BlockTerminationSignals();
  microrl::SetLogComponent(kComponent);
  microrl::SetUpFlagUsage(
      "Scores completions for format and answer correctness: serves gRPC, or "
      "with the "
      "`score` command scores a JSONL file offline.");
  microrl::rpc::SetServerFlagDefaults(50052, 9402);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (absl::Status status = ValidateRewardFlags(); !status.ok()) {
    return microrl::rpc::UsageError(kComponent, status);
  }
  if (positional.size() > 1 && std::string(positional[1]) == "score") {
    positional.erase(positional.begin() + 1);
    if (absl::Status status =
            microrl::rpc::CheckNoPositionalArguments(positional);
        !status.ok()) {
      return microrl::rpc::UsageError(kComponent, status);
    }
    return Score();
  }

  absl::StatusOr<microrl::rpc::ServerMainOptions> flags =
      microrl::rpc::ServingOptionsFromFlags(positional);
  if (!flags.ok()) return microrl::rpc::UsageError(kComponent, flags.status());
  microrl::rpc::ServerMainOptions server = *std::move(flags);

  microrl::reward::RewardServiceOptions options;
  options.scoring = ScoringFromFlags();
  options.max_batch_items = absl::GetFlag(FLAGS_max_batch_items);
  options.threads = absl::GetFlag(FLAGS_threads);
  auto registry = std::make_shared<prometheus::Registry>();
  microrl::rpc::ProcessIdentity identity(kComponent);
  microrl::reward::RewardService service(options, identity, *registry);
  microrl::ExitWithoutStaticDestructors(microrl::rpc::RunServer(
      server, {{&service, "microrl.v1.Reward"}}, registry, identity));
}
