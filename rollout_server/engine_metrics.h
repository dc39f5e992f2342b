#ifndef MICRORL_ROLLOUT_SERVER_ENGINE_METRICS_H_
#define MICRORL_ROLLOUT_SERVER_ENGINE_METRICS_H_

#include <cstdint>

#include "absl/time/time.h"
#include "common/device/device.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace microrl::rollout {

// The engine's Prometheus instruments (microrl_rollout_*), named after what
// happened. Thread-safe where the instruments are; the rate and memory windows
// are the engine thread's.
class EngineMetrics {
 public:
  explicit EngineMetrics(prometheus::Registry& registry);

  void Generated(int64_t tokens);
  void PromptTokens(int64_t tokens);
  void Finished(const char* finish_reason);
  // A prompt of a group of two or more completions, its KV held once in a
  // shared prompt slot (`shared`) or copied into each completion's slot.
  void GroupPrompt(bool shared);
  void Prefilled(double seconds);
  void DecodeStep(double seconds);
  void Swapped(double seconds, uint64_t adapter_version);
  void Asleep(bool asleep, int64_t kv_cache_bytes);

  // Tokens per second over windows of at least a second of work (0 when
  // `idle`).
  void PublishRate(absl::Time now, bool idle);
  // Running and waiting sequences, KV-cache use, and (at most once a second)
  // the device's memory.
  void PublishLoad(absl::Time now, int64_t running, int64_t waiting,
                   double kv_used_ratio, const device::Device& device);

 private:
  prometheus::Counter& generated_tokens_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& completions_;
  prometheus::Family<prometheus::Counter>& group_prompts_;
  prometheus::Gauge& running_gauge_;
  prometheus::Gauge& waiting_gauge_;
  prometheus::Gauge& kv_used_ratio_;
  prometheus::Gauge& kv_bytes_;
  prometheus::Gauge& tokens_per_second_;
  prometheus::Gauge& adapter_version_gauge_;
  prometheus::Gauge& sleeping_gauge_;
  prometheus::Gauge& device_allocated_;      // caching allocator: live tensors
  prometheus::Gauge& device_reserved_;       // caching allocator: held blocks
  prometheus::Gauge& device_peak_reserved_;  // the most it has held
  prometheus::Histogram& prefill_seconds_;
  prometheus::Histogram& decode_step_seconds_;
  prometheus::Histogram& swap_seconds_;
  absl::Time rate_window_start_;
  uint64_t rate_window_tokens_ = 0;
  absl::Time memory_published_ = absl::InfinitePast();
};

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_ENGINE_METRICS_H_
