#include "rollout_server/request_validation.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace microrl::rollout {

absl::Status ValidateRequest(const GenerationRequest& request,
                             const RequestLimits& limits) {
  const int64_t max_len = limits.max_model_len;
  if (request.prompts.empty()) return absl::InvalidArgumentError("no prompts");
  if (request.disable_adapter && request.adapter_version != 0) {
    return absl::InvalidArgumentError(
        "adapter_version names an adapter and disable_adapter turns it off; "
        "set one of them");
  }
  if (request.prompts.size() > kMaxPrompts) {
    return absl::InvalidArgumentError(
        absl::StrCat(request.prompts.size(), " prompts; at most ", kMaxPrompts,
                     " per request"));
  }
  if (request.group_size >= 1 &&
      static_cast<int64_t>(request.prompts.size()) * request.group_size >
          kMaxCompletions) {
    return absl::InvalidArgumentError(absl::StrCat(
        request.prompts.size(), " prompts x group_size ", request.group_size,
        " completions; at most ", kMaxCompletions, " per request"));
  }
  if (request.group_size < 1 || request.group_size > limits.max_group_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("group_size ", request.group_size, " is outside [1, ",
                     limits.max_group_size, "]"));
  }
  const SamplingConfig& s = request.sampling;
  if (!std::isfinite(s.temperature) || s.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be finite and >= 0 (0 is greedy), not ",
                     s.temperature));
  }
  if (s.top_logprobs < 0 || s.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be in [0, ", kMaxTopLogprobs, "], not ",
                     s.top_logprobs));
  }
  if (!(s.top_p > 0 && s.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in (0, 1], not ", s.top_p));
  }
  if (s.max_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be >= 0 (0: the server's default), not ",
                     s.max_tokens));
  }
  if (s.stop_token_ids.size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(absl::StrCat(s.stop_token_ids.size(),
                                                   " stop token ids; at most ",
                                                   kMaxStopTokenIds));
  }
  for (int32_t id : s.stop_token_ids) {
    if (id < 0 || id >= limits.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop token id ", id, " is outside the vocabulary [0, ",
                       limits.vocab_size, ")"));
    }
  }
  if (s.stop_strings.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(absl::StrCat(
        s.stop_strings.size(), " stop strings; at most ", kMaxStopStrings));
  }
  for (const std::string& stop : s.stop_strings) {
    if (stop.empty() || stop.size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("a stop string must have 1 to ", kMaxStopStringBytes,
                       " bytes, not ", stop.size()));
    }
  }
  if (!s.stop_strings.empty() && !limits.has_tokenizer) {
    return absl::InvalidArgumentError(
        "stop strings need a tokenizer, and this server has none (no "
        "tokenizer.json "
        "beside the model)");
  }
  for (size_t p = 0; p < request.prompts.size(); ++p) {
    const std::vector<int32_t>& prompt = request.prompts[p];
    const int64_t length = static_cast<int64_t>(prompt.size());
    if (prompt.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("prompt ", p, " is empty"));
    if (length >= max_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt ", p, " has ", length, " tokens; max_model_len is ", max_len,
          ", leaving no room for a completion"));
    }
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (prompt[i] < 0 || prompt[i] >= limits.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "prompt ", p, ", token ", i, ": id ", prompt[i],
            " is outside the vocabulary [0, ", limits.vocab_size, ")"));
      }
    }
    if (s.max_tokens > 0 && length + s.max_tokens > max_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_tokens ", s.max_tokens, " with prompt ", p, "'s ",
                       length, " tokens exceeds max_model_len ", max_len));
    }
  }
  return absl::OkStatus();
}

}  // namespace microrl::rollout
