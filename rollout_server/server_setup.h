#ifndef MICRORL_ROLLOUT_SERVER_SERVER_SETUP_H_
#define MICRORL_ROLLOUT_SERVER_SERVER_SETUP_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/device/device.h"
#include "common/model/config.h"
#include "prometheus/registry.h"
#include "rollout_server/engine.h"

namespace microrl::rollout {

// What the rollout server's flags say about the model and the engine.
struct ServerModelOptions {
  std::string
      model_dir;  // Hugging Face layout; tokenizer.json beside it is optional
  device::Device device;
  // "auto" (float32 on the CPU, bfloat16 on CUDA), "float32", "bfloat16" or
  // "float16".
  std::string dtype = "auto";
  int64_t kv_cache_mb = 1024;
  // Cap on what the CUDA caching allocator may reserve, GiB (0: none).
  double gpu_memory_gib = 0;
  // 0: min(4096, the model's max_position_embeddings).
  int64_t max_model_len = 0;
  int64_t max_tokens = 1024;
  int max_group_size = 1024;
  int64_t prefill_tokens = 8192;
  int64_t decode_steps_per_sync = 0;  // 0: 8 on CUDA, 1 on the CPU
  bool cuda_graphs = true;            // CUDA only; ignored on the CPU
  int64_t decode_key_bucket = 0;
  bool share_prompt_kv = false;
  // Intra-op threads on the CPU (ignored on CUDA); 0: CpuThreadsFor's choice.
  int cpu_threads = 0;
  int64_t max_queued_requests = 256;
  int64_t max_queued_completions = 65536;
  // A PEFT adapter directory to serve from the start, as version
  // adapter_version.
  std::string startup_adapter;
  uint64_t adapter_version = 1;
  // On the CPU, adapters run merged into a copy of the base weights
  // (Decoder::MergeAdapter); ignored on CUDA.
  bool merge_adapters = true;
  // On the CPU in float32, decode through MKL's packed weights
  // (Decoder::PackWeights); ignored elsewhere.
  bool pack_weights = true;
};

// The CPU's intra-op threads for a model of `config` when `requested` is 0:
// one when a token's matrix products are under kSmallModelMacs multiply-adds
// (the demo's 0.45M-parameter model decodes 2x faster on one thread than on
// two on the 2-core CI machine: each operator's work is too small to pay for
// the threads' fork and join), else `available` (LibTorch's default).
inline constexpr int64_t kSmallModelMacs = 4'000'000;
int64_t MacsPerToken(const model::ModelConfig& config);
int CpuThreadsFor(const model::ModelConfig& config, int requested,
                  int available);

// Loads the model (and tokenizer, and start-up adapter) and starts the engine.
// Errors name the flag or file at fault.
absl::StatusOr<std::shared_ptr<Engine>> StartEngine(
    const ServerModelOptions& options, prometheus::Registry& registry);

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_SERVER_SETUP_H_
