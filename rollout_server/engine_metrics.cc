#include "rollout_server/engine_metrics.h"

#include <string>
#include <utility>

namespace microrl::rollout {
namespace {

prometheus::Gauge& MakeGauge(prometheus::Registry& registry,
                             const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add(
      {});
}

prometheus::Histogram& MakeHistogram(
    prometheus::Registry& registry, const std::string& name,
    const std::string& help, prometheus::Histogram::BucketBoundaries buckets) {
  return prometheus::BuildHistogram()
      .Name(name)
      .Help(help)
      .Register(registry)
      .Add({}, std::move(buckets));
}

}  // namespace

EngineMetrics::EngineMetrics(prometheus::Registry& registry)
    : generated_tokens_(prometheus::BuildCounter()
                            .Name("microrl_rollout_generated_tokens_total")
                            .Help("Completion tokens sampled.")
                            .Register(registry)
                            .Add({})),
      prompt_tokens_(
          prometheus::BuildCounter()
              .Name("microrl_rollout_prompt_tokens_total")
              .Help("Prompt tokens prefilled (once per group chunk).")
              .Register(registry)
              .Add({})),
      completions_(prometheus::BuildCounter()
                       .Name("microrl_rollout_completions_total")
                       .Help("Completions finished, by finish reason.")
                       .Register(registry)),
      group_prompts_(
          prometheus::BuildCounter()
              .Name("microrl_rollout_group_prompts_total")
              .Help("Prompts of groups of two or more completions, by where "
                    "their KV went: kv=shared (once, in a prompt slot read by "
                    "the group) or kv=copied (into each completion's slot).")
              .Register(registry)),
      running_gauge_(MakeGauge(registry, "microrl_rollout_running_sequences",
                               "Sequences in the decode batch.")),
      waiting_gauge_(MakeGauge(registry, "microrl_rollout_waiting_sequences",
                               "Completions queued, not yet started.")),
      kv_used_ratio_(
          MakeGauge(registry, "microrl_rollout_kv_cache_usage_ratio",
                    "Cached tokens over the KV cache's token capacity.")),
      kv_bytes_(MakeGauge(
          registry, "microrl_rollout_kv_cache_bytes",
          "Device memory reserved for the KV cache (0 while asleep).")),
      tokens_per_second_(
          MakeGauge(registry, "microrl_rollout_tokens_per_second",
                    "Completion tokens per second over the last second of "
                    "work (0 when idle).")),
      adapter_version_gauge_(
          MakeGauge(registry, "microrl_rollout_adapter_version",
                    "Version of the loaded LoRA adapter (0: none).")),
      sleeping_gauge_(MakeGauge(registry, "microrl_rollout_sleeping",
                                "1 while asleep (KV cache freed).")),
      device_allocated_(MakeGauge(
          registry, "microrl_rollout_device_memory_allocated_bytes",
          "GPU memory held by live tensors of this process (0 on the CPU).")),
      device_reserved_(MakeGauge(
          registry, "microrl_rollout_device_memory_reserved_bytes",
          "GPU memory held by this process's caching allocator (0 on the "
          "CPU).")),
      device_peak_reserved_(MakeGauge(
          registry, "microrl_rollout_device_memory_peak_reserved_bytes",
          "The most GPU memory this process's caching allocator has held "
          "since it started (0 on the CPU).")),
      prefill_seconds_(MakeHistogram(
          registry, "microrl_rollout_prefill_seconds",
          "Seconds per batched prefill, sampling included.",
          {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10})),
      decode_step_seconds_(MakeHistogram(
          registry, "microrl_rollout_decode_step_seconds",
          "Seconds per decode step of the whole batch, sampling included.",
          {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5})),
      swap_seconds_(
          MakeHistogram(registry, "microrl_rollout_adapter_swap_seconds",
                        "Seconds from a LoadAdapter reaching the engine to the "
                        "new adapter being current (drain included).",
                        {0.0001, 0.001, 0.01, 0.1, 1, 10, 60})),
      rate_window_start_(absl::Now()) {}

void EngineMetrics::Generated(int64_t tokens) {
  generated_tokens_.Increment(static_cast<double>(tokens));
  rate_window_tokens_ += static_cast<uint64_t>(tokens);
}

void EngineMetrics::PromptTokens(int64_t tokens) {
  prompt_tokens_.Increment(static_cast<double>(tokens));
}

void EngineMetrics::Finished(const char* finish_reason) {
  completions_.Add({{"finish_reason", finish_reason}}).Increment();
}

void EngineMetrics::GroupPrompt(bool shared) {
  group_prompts_.Add({{"kv", shared ? "shared" : "copied"}}).Increment();
}

void EngineMetrics::Prefilled(double seconds) {
  prefill_seconds_.Observe(seconds);
}

void EngineMetrics::DecodeStep(double seconds) {
  decode_step_seconds_.Observe(seconds);
}

void EngineMetrics::Swapped(double seconds, uint64_t adapter_version) {
  swap_seconds_.Observe(seconds);
  adapter_version_gauge_.Set(static_cast<double>(adapter_version));
}

void EngineMetrics::Asleep(bool asleep, int64_t kv_cache_bytes) {
  sleeping_gauge_.Set(asleep ? 1 : 0);
  kv_bytes_.Set(static_cast<double>(kv_cache_bytes));
}

void EngineMetrics::PublishRate(absl::Time now, bool idle) {
  const double window = absl::ToDoubleSeconds(now - rate_window_start_);
  if (idle) {
    tokens_per_second_.Set(0);
    rate_window_start_ = now;
    rate_window_tokens_ = 0;
  } else if (window >= 1.0) {
    tokens_per_second_.Set(static_cast<double>(rate_window_tokens_) / window);
    rate_window_start_ = now;
    rate_window_tokens_ = 0;
  }
}

void EngineMetrics::PublishLoad(absl::Time now, int64_t running,
                                int64_t waiting, double kv_used_ratio,
                                const device::Device& device) {
  running_gauge_.Set(static_cast<double>(running));
  if (now - memory_published_ >= absl::Seconds(1)) {  // host-side counters
    const device::MemoryInfo memory = device::QueryMemory(device);
    device_allocated_.Set(static_cast<double>(memory.allocated_bytes));
    device_reserved_.Set(static_cast<double>(memory.reserved_bytes));
    device_peak_reserved_.Set(static_cast<double>(memory.peak_reserved_bytes));
    memory_published_ = now;
  }
  waiting_gauge_.Set(static_cast<double>(waiting));
  kv_used_ratio_.Set(kv_used_ratio);
}

}  // namespace microrl::rollout
