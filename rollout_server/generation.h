#ifndef MICRORL_ROLLOUT_SERVER_GENERATION_H_
#define MICRORL_ROLLOUT_SERVER_GENERATION_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

// What the engine is asked for and what it answers (the gRPC service converts
// its messages to and from these).
namespace microrl::rollout {

inline constexpr int kMaxTopLogprobs = 20;

struct SamplingConfig {
  double temperature = 1.0;  // 0: greedy
  double top_p = 1.0;
  int64_t top_k = 0;
  int64_t max_tokens = 0;  // 0: the engine's default
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop_strings;
  bool ignore_eos = false;
  std::optional<uint64_t> seed;
  // Also report, for each sampled token, the top this-many tokens of the
  // distribution its log-prob comes from (0 to kMaxTopLogprobs).
  int top_logprobs = 0;
  // Seeds follow first_prompt_index + the prompt's index in the request.
  uint32_t first_prompt_index = 0;
};

enum class FinishReason { kStop, kLength, kAbort };

struct Completion {
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<float> logprobs;
  // With SamplingConfig::top_logprobs k: per token, the k most likely tokens
  // and their log-probs, most likely first.
  std::vector<std::vector<std::pair<int32_t, float>>> top_logprobs;
  FinishReason finish_reason = FinishReason::kLength;
  uint64_t adapter_version = 0;
  std::string stop_reason;
};

struct GenerationRequest {
  std::vector<std::vector<int32_t>> prompts;  // token ids
  int group_size = 1;
  SamplingConfig sampling;
  bool disable_adapter = false;
  bool wait_if_sleeping = false;
  uint64_t min_adapter_version = 0;
  // Generate with exactly this resident adapter version (FailedPrecondition
  // if it is not resident). 0: the newest loaded when the request starts.
  uint64_t adapter_version = 0;
  // Called on the engine thread each time a completion gains a token, with the
  // prompt's index, the completion's index in its group and the completion so
  // far (its text is final up to where a stop string could still begin;
  // finished is set once, with the finished completion). For streaming: it
  // must be quick and must not call the engine.
  std::function<void(int prompt, int index, const Completion& completion,
                     bool finished)>
      on_progress;
  // Set by the caller to abandon the request; its sequences are freed at the
  // next step.
  std::shared_ptr<std::atomic<bool>> cancelled =
      std::make_shared<std::atomic<bool>>(false);
};

struct GenerationResult {
  // groups[p][g]: completion g of prompt p.
  std::vector<std::vector<Completion>> groups;
  double queue_seconds = 0;
  double generate_seconds = 0;
};

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_GENERATION_H_
