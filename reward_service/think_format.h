#ifndef MICRORL_REWARD_SERVICE_THINK_FORMAT_H_
#define MICRORL_REWARD_SERVICE_THINK_FORMAT_H_

#include <string>

#include "absl/strings/string_view.h"

namespace microrl::reward {

// How a completion is laid out around its reasoning.
struct ThinkLayout {
  // One <think>...</think> block first (opened by the prompt or the
  // completion), closed exactly once, not nested or repeated, followed by a
  // non-empty answer.
  bool well_formed = false;
  // Where a final answer may be taken from: the text after </think>; the whole
  // completion when it has no think block at all; empty when the thought never
  // closes (an answer inside the thought does not count).
  std::string answer_region;
  // Why the layout is not well formed ("" when it is).
  std::string problem;
};

// Whether `prompt` leaves a <think> block open for the completion to continue
// (DeepSeek-R1-Distill's template ends its generation prompt with "<think>\n").
bool PromptOpensThink(absl::string_view prompt);

ThinkLayout AnalyzeThink(absl::string_view prompt,
                         absl::string_view completion);

}  // namespace microrl::reward

#endif  // MICRORL_REWARD_SERVICE_THINK_FORMAT_H_
