#ifndef MICRORL_REWARD_SERVICE_SCORER_H_
#define MICRORL_REWARD_SERVICE_SCORER_H_

#include <map>
#include <string>

#include "absl/time/time.h"
#include "reward_service/extraction.h"
#include "reward_service/math_answer.h"

namespace microrl::reward {

// The reward of the paper: r = format_weight * r_format + correct_weight *
// r_correct, r_format in {0, 1} for the <think>...</think> layout, r_correct in
// {0, 1} for the final answer matching the reference.
struct ScoreOptions {
  double format_weight = 0.1;
  double correct_weight = 1.0;
  ExtractionOptions extraction;
  // Limits per item: characters of an extracted answer, work of one comparison.
  size_t max_answer_chars = 1000;
  int64_t max_steps = 200'000;
  absl::Duration item_deadline = absl::Seconds(5);
};

struct ScoreInput {
  std::string id;
  std::string prompt;      // as the model saw it (may open a <think> block)
  std::string completion;  // or, in answer mode, the bare answer
  std::string ground_truth;
};

struct ScoreOutput {
  std::string id;
  double reward = 0;
  std::map<std::string, double> components;  // "format", "correct"
  bool correct = false;
  std::string extracted_answer;
  // Which extraction rule found it (AnswerSourceName: "boxed", "phrase", ...).
  std::string answer_source;
  // Set whenever a component is 0: what was missing or wrong.
  std::string reason;
  bool timed_out = false;
  double seconds = 0;
};

// The default scoring: a full completion or a bare answer. Think layout (the
// format term), answer extraction after the thought (FindAnswer: \boxed{}, a
// bare answer, answer phrases, the last math, the last "=", the last number),
// comparison with the reference (read by the same rules, so it may be a bare
// answer or a solution text). Never throws.
ScoreOutput ScoreCompletion(const ScoreInput& input,
                            const ScoreOptions& options);

// Scores a bare answer against the reference (light extraction only: a \boxed{}
// or math delimiters around it are removed); no format component.
ScoreOutput ScoreAnswer(const ScoreInput& input, const ScoreOptions& options);

// The reference answer within a ground-truth text.
std::string ReferenceAnswer(const std::string& ground_truth);

}  // namespace microrl::reward

#endif  // MICRORL_REWARD_SERVICE_SCORER_H_
