#ifndef MICRORL_REWARD_SERVICE_SCORE_COMMAND_H_
#define MICRORL_REWARD_SERVICE_SCORE_COMMAND_H_

#include <string>

#include "absl/status/status.h"
#include "reward_service/scorer.h"

namespace microrl::reward {

struct ScoreCommandOptions {
  std::string in_path;
  std::string out_path;
  // "completion": score full completions (format + answer); "answer": compare a
  // bare answer with the ground truth.
  std::string mode = "completion";
  ScoreOptions scoring;
  int threads = 0;  // 0: one per hardware thread
};

// `reward_service score`: reads JSON lines {"id", "completion" (or "answer"),
// "ground_truth", optional "prompt"} from in_path and writes, in order, {"id",
// "reward", "components": {...}, "extracted_answer", "correct", "reason"} to
// out_path. A malformed line is an InvalidArgument error naming the file and
// line; nothing is written then.
absl::Status RunScoreCommand(const ScoreCommandOptions& options);

}  // namespace microrl::reward

#endif  // MICRORL_REWARD_SERVICE_SCORE_COMMAND_H_
