#include "rollout_server/server_setup.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"
#include "common/base/passing_thread.h"
#include "common/model/decoder.h"
#include "common/model/loader.h"
#include "common/model/lora.h"
#include "common/tokenizer/tokenizer.h"

namespace microrl::rollout {

int64_t MacsPerToken(const model::ModelConfig& config) {
  const int64_t h = config.hidden_size;
  const int64_t attention =
      2 * h * config.num_heads * config.head_dim +    // q, o
      2 * h * config.num_kv_heads * config.head_dim;  // k, v
  const int64_t mlp = 3 * h * config.intermediate_size;
  return config.num_layers * (attention + mlp) + config.vocab_size * h;
}

int CpuThreadsFor(const model::ModelConfig& config, int requested,
                  int available) {
  if (requested > 0) return requested;
  return MacsPerToken(config) < kSmallModelMacs ? 1 : std::max(available, 1);
}

namespace {

absl::StatusOr<std::shared_ptr<Engine>> StartEngineHere(
    const ServerModelOptions& options, prometheus::Registry& registry) {
  if (options.cpu_threads < 0) {
    return absl::InvalidArgumentError("--cpu_threads: must be >= 0");
  }
  model::ModelLoadOptions load;
  load.model_dir = options.model_dir;
  load.device = options.device;
  load.dtype = options.dtype;
  load.gpu_memory_gib = options.gpu_memory_gib;
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<model::Decoder>> decoder =
      model::LoadModel(load);
  if (!decoder.ok()) return decoder.status();
  if (options.pack_weights && !(*decoder)->options().device.is_cuda()) {
    absl::StatusOr<int64_t> packed = (*decoder)->PackWeights();
    if (!packed.ok()) return packed.status();
    if ((*decoder)->packs_weights()) {
      MRL_LOG(INFO)
          << "decoding through MKL's packed weights (--pack_weights): "
          << *packed << " bytes (weights under " << model::kPackMinElements
          << " elements stay unpacked)";
    } else {
      MRL_LOG(INFO) << "--pack_weights: unavailable here (float32 CPU models "
                       "with LibTorch's MKL only); decoding unpacked";
    }
  }
  const model::DecoderOptions decoder_options = (*decoder)->options();
  const model::ModelConfig config = (*decoder)->config();
  MRL_LOG(INFO) << "loaded " << model::ArchitectureName(config.architecture)
                << " from " << options.model_dir << " in "
                << absl::ToDoubleSeconds(absl::Now() - start) << " s";

  if (!decoder_options.device.is_cuda()) {
    const int threads =
        CpuThreadsFor(config, options.cpu_threads, at::get_num_threads());
    at::set_num_threads(threads);
    MRL_LOG(INFO) << "CPU intra-op threads: " << threads
                  << (options.cpu_threads > 0
                          ? " (--cpu_threads)"
                          : absl::StrCat(" (auto: ", MacsPerToken(config),
                                         " multiply-adds per token)"));
  }

  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
  const std::string tokenizer_path = options.model_dir + "/tokenizer.json";
  if (std::filesystem::exists(tokenizer_path)) {
    absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> loaded =
        tokenizer::Tokenizer::FromFile(tokenizer_path);
    if (!loaded.ok()) return loaded.status();
    tokenizer = *std::move(loaded);
  } else {
    MRL_LOG(WARNING)
        << "no " << tokenizer_path
        << ": completions carry no text, and text prompts and stop strings "
           "are refused";
  }

  EngineOptions engine_options;
  engine_options.kv_cache_bytes = options.kv_cache_mb << 20;
  engine_options.max_model_len = options.max_model_len;
  const int64_t positions = config.max_position_embeddings;
  if (engine_options.max_model_len == 0) {
    engine_options.max_model_len =
        positions > 0 ? std::min<int64_t>(4096, positions) : 4096;
  } else if (positions > 0 && engine_options.max_model_len > positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_model_len ", options.max_model_len,
        " exceeds the model's max_position_embeddings ", positions));
  }
  engine_options.default_max_tokens = options.max_tokens;
  engine_options.max_group_size = options.max_group_size;
  engine_options.prefill_tokens = options.prefill_tokens;
  if (options.decode_steps_per_sync < 0 ||
      options.decode_steps_per_sync > 256) {
    return absl::InvalidArgumentError(
        "--decode_steps_per_sync: must be in [0, 256] (0: 8 on CUDA, 1 on the "
        "CPU)");
  }
  engine_options.decode_steps_per_sync = options.decode_steps_per_sync;
  // On by default: measured 2.3x the eager decode on an H200 (docs/gpu.md).
  // The CPU has no graphs, so there it means nothing.
  engine_options.cuda_graphs =
      options.cuda_graphs && decoder_options.device.is_cuda();
  engine_options.decode_key_bucket = options.decode_key_bucket;
  engine_options.share_prompt_kv = options.share_prompt_kv;
  engine_options.max_queued_requests = options.max_queued_requests;
  engine_options.max_queued_completions = options.max_queued_completions;
  engine_options.eos_token_ids = config.eos_token_ids;
  std::shared_ptr<const model::Decoder> shared_decoder = *std::move(decoder);
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(shared_decoder, tokenizer, engine_options, registry);
  if (!engine.ok()) return engine.status();
  std::shared_ptr<Engine> result = *std::move(engine);

  const bool merge_adapters =
      options.merge_adapters && shared_decoder->MergesAdaptersForServing();
  if (!options.startup_adapter.empty()) {
    absl::StatusOr<std::unique_ptr<model::LoraAdapter>> adapter =
        model::LoraAdapter::LoadPeft(options.startup_adapter, config,
                                     decoder_options.device,
                                     decoder_options.dtype);
    if (!adapter.ok()) {
      return absl::Status(
          adapter.status().code(),
          absl::StrCat("--adapter: ", adapter.status().message()));
    }
    if (merge_adapters) {
      if (absl::Status merged = shared_decoder->MergeAdapter(**adapter);
          !merged.ok()) {
        return merged;
      }
    } else {
      (*adapter)->FuseInputProjections();
    }
    absl::StatusOr<double> swapped = result->LoadAdapter(
        std::shared_ptr<const model::LoraAdapter>(*std::move(adapter)),
        options.adapter_version);
    if (!swapped.ok()) return swapped.status();
  }
  if (merge_adapters) {
    MRL_LOG(INFO) << "adapters run merged into a copy of the base weights "
                     "(--merge_adapter)";
  }
  const EngineSnapshot snapshot = result->Snapshot();
  MRL_LOG(INFO) << "engine ready: " << snapshot.num_slots
                << " sequence slots of " << engine_options.max_model_len
                << " tokens, KV cache " << snapshot.kv_cache_bytes << " bytes";
  return result;
}

}  // namespace

absl::StatusOr<std::shared_ptr<Engine>> StartEngine(
    const ServerModelOptions& options, prometheus::Registry& registry) {
  // Off the caller's thread: loading runs LibTorch's OpenMP operators, and the
  // team of workers they would leave on the caller (the server's main thread)
  // slows every operator the engine's thread runs (passing_thread.h).
  return RunOnPassingThread([&] { return StartEngineHere(options, registry); });
}

}  // namespace microrl::rollout
