#ifndef MICRORL_LEARNER_GENERATION_H_
#define MICRORL_LEARNER_GENERATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

// What the learner asks a rollout server for and gets back, as plain structs
// (the wire types stay inside RolloutClient).
namespace microrl::learner {

// One Generate call's settings, the prompts aside. Zero means the server's
// default where the protocol says so (top_k 0: off).
struct GenerateParams {
  std::string request_id;
  int64_t group_size = 1;  // completions per prompt
  double temperature = 0;
  double top_p = 0;
  int64_t top_k = 0;
  int64_t max_tokens = 0;
  uint64_t seed = 0;
  // Seeding treats prompt p as prompt first_prompt_index + p of a larger batch
  // (a data-parallel rank's share samples what the whole batch would).
  uint32_t first_prompt_index = 0;
  // The server refuses (FAILED_PRECONDITION) while it serves an older adapter.
  uint64_t min_adapter_version = 0;
  // Sample with exactly this adapter version, which the server must hold
  // resident (else FAILED_PRECONDITION); 0: its newest.
  uint64_t adapter_version = 0;
  bool disable_adapter = false;  // sample from the base model
};

// A prompt, already tokenized.
struct PromptIds {
  std::string id;
  std::vector<int32_t> ids;
};

struct Completion {
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;  // the sampled tokens' log-probs
  std::string text;
  int64_t completion_tokens = 0;
  bool truncated = false;        // stopped by max_tokens
  uint64_t adapter_version = 0;  // of the adapter that sampled it
};

// The completions of one prompt, in the order asked.
struct CompletionGroup {
  std::vector<int32_t> prompt_token_ids;
  std::vector<Completion> completions;
};

// Where completions come from: a rollout server over gRPC (RolloutClient) or
// any OpenAI-compatible server (OpenAiClient).
class CompletionSource {
 public:
  virtual ~CompletionSource() = default;
  // One group of completions per prompt, in the prompts' order.
  virtual absl::StatusOr<std::vector<CompletionGroup>> Generate(
      const std::vector<PromptIds>& prompts, const GenerateParams& params) = 0;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_GENERATION_H_
