#ifndef MICRORL_ROLLOUT_SERVER_REQUEST_VALIDATION_H_
#define MICRORL_ROLLOUT_SERVER_REQUEST_VALIDATION_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "rollout_server/generation.h"

namespace microrl::rollout {

// Per-request bounds that hold whatever the server's flags say.
inline constexpr size_t kMaxPrompts = 4096;
inline constexpr int64_t kMaxCompletions = 65536;
inline constexpr size_t kMaxStopTokenIds = 64;
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;

// What a request is checked against: the model's and the server's.
struct RequestLimits {
  int64_t vocab_size = 0;
  int64_t max_model_len = 0;  // prompt + completion tokens
  int max_group_size = 1;
  bool has_tokenizer = false;  // stop strings need one
};

// InvalidArgument naming the first problem of `request` (prompts, group size,
// sampling parameters, stop conditions, lengths), or OK.
absl::Status ValidateRequest(const GenerationRequest& request,
                             const RequestLimits& limits);

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_REQUEST_VALIDATION_H_
