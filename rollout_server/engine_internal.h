#ifndef MICRORL_ROLLOUT_SERVER_ENGINE_INTERNAL_H_
#define MICRORL_ROLLOUT_SERVER_ENGINE_INTERNAL_H_

// The engine's private parts, shared by its three files: engine.cc (the
// callers' side, the loop, requests and completions), engine_controls.cc
// (adapter swaps, Sleep, Wake) and engine_batch.cc (admission, prefill and
// decode steps). Nothing outside rollout_server/engine*.cc includes this.

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "common/base/random.h"
#include "common/device/device.h"
#include "common/model/decoder.h"
#include "common/model/kv_cache.h"
#include "common/tokenizer/tokenizer.h"
#include "rollout_server/engine.h"
#include "rollout_server/stop_criteria.h"

namespace microrl::rollout {
namespace engine_internal {

// The seed of completion `sample` of prompt `prompt`: a function of the
// request's seed and the completion's place in the request only.
inline uint64_t SequenceSeed(uint64_t request_seed, uint32_t prompt,
                             int sample) {
  return SplitMix64(request_seed ^
                    SplitMix64((static_cast<uint64_t>(prompt) << 32) |
                               static_cast<uint32_t>(sample)));
}

inline double Seconds(absl::Duration duration) {
  return absl::ToDoubleSeconds(duration);
}

inline device::Device ToDevice(const at::Device& device) {
  return {device.is_cuda(),
          device.is_cuda() ? std::max<int>(0, device.index()) : 0};
}

// A KV cache of `num_slots` slots of `max_model_len` positions for `decoder`;
// ResourceExhausted when the device has no room.
absl::StatusOr<model::KvCache> ReserveCache(const model::Decoder& decoder,
                                            int64_t num_slots,
                                            int64_t max_model_len);

}  // namespace engine_internal

struct Engine::Request {
  GenerationRequest spec;
  std::function<void(absl::StatusOr<GenerationResult>)> done;
  GenerationResult result;
  uint64_t seed = 0;
  std::vector<int64_t> max_tokens;  // per prompt
  StopCriteria stop;
  // The adapter version its completions use (0: none) and that adapter,
  // fixed at Accept when the request names a version, else when its first
  // completion starts (then the newest loaded one).
  std::optional<uint64_t> version;
  std::shared_ptr<const model::LoraAdapter> adapter;
  int next_prompt = 0;  // the next completion to admit
  int next_sample = 0;
  int64_t unfinished = 0;  // completions not finished yet
  absl::Time submitted;
  std::optional<absl::Time> started;
  bool finished = false;  // done() has run
};

struct Engine::Sequence {
  std::shared_ptr<Request> request;
  int prompt = 0;
  int sample = 0;
  int64_t max_tokens = 0;
  uint64_t seed = 0;
  int32_t last_token = 0;  // sampled, not yet in the KV cache
  uint64_t version = 0;    // its adapter version (0: none)
  // The prompt's KV: in prompt slot `prompt_slot` at [prompt_offset,
  // + prompt_length), the sequence's slot holding only its completion, or
  // (prompt_slot -1) in its own slot.
  int prompt_slot = -1;
  int64_t prompt_offset = 0;
  int64_t prompt_length = 0;
  bool finished = false;
  std::unique_ptr<tokenizer::IncrementalDecoder> detokenizer;
  Completion* out = nullptr;
};

struct Engine::Control {
  enum class Kind { kLoadAdapter, kSleep, kWake } kind;
  std::shared_ptr<const model::LoraAdapter> adapter;
  uint64_t version = 0;
  int keep_versions = 1;  // resident versions after a load, the new one in
  bool abort_running = false;
  absl::Time submitted = absl::Now();
  // Results: seconds (swap) or bytes (sleep, wake).
  double seconds = 0;
  int64_t bytes = 0;
  std::promise<absl::Status> done;
};

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_ENGINE_INTERNAL_H_
