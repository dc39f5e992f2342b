// rollout_server: samples groups of completions from the base model plus the
// current LoRA adapter, on one GPU (or the CPU), over gRPC.
#include <filesystem>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/base/flag_usage.h"
#include "common/base/logging.h"
#include "common/base/memory.h"
#include "common/base/signals.h"
#include "common/device/device.h"
#include "common/rpc/server_flags.h"
#include "common/rpc/server_main.h"
#include "rollout_server/openai_server.h"
#include "rollout_server/rollout_service.h"
#include "rollout_server/server_setup.h"

ABSL_FLAG(std::string, device, "cpu",
          "Device to run the model on: cpu, cuda or cuda:N.");
ABSL_FLAG(
    std::string, model, "",
    "Hugging Face model directory (config.json, safetensors, tokenizer.json). "
    "Without it the server answers GetInfo and health only.");
ABSL_FLAG(std::string, dtype, "auto",
          "Base weights' dtype: auto (float32 on the CPU, bfloat16 on CUDA), "
          "float32, "
          "bfloat16 or float16.");
ABSL_FLAG(int64_t, kv_cache_mb, 1024,
          "KV-cache memory, MiB; it holds kv_cache_mb / (one max_model_len "
          "sequence's "
          "keys and values) sequences at once.");
ABSL_FLAG(double, gpu_memory_gib, 0,
          "Cap on the GPU memory this process's CUDA caching allocator may "
          "reserve, GiB (0: no cap): weights, KV cache and activations all "
          "count, so a rollout server and a learner can share one GPU within "
          "a budget. Needs --device=cuda.");
ABSL_FLAG(int64_t, max_model_len, 0,
          "Tokens per sequence, prompt + completion (0: min(4096, the model's "
          "max_position_embeddings)).");
ABSL_FLAG(int64_t, max_tokens, 1024,
          "Completion tokens when a request's max_tokens is 0.");
ABSL_FLAG(int, max_group_size, 1024,
          "Largest group_size a request may ask for.");
ABSL_FLAG(int64_t, prefill_tokens, 8192,
          "Padded prompt tokens per batched prefill.");
ABSL_FLAG(int64_t, decode_steps_per_sync, 0,
          "Decode steps run back to back on the device before the sampled "
          "tokens are read back (the host waits for the GPU once per window); "
          "sequences that stop inside a window drop their later tokens. 0: 8 "
          "on CUDA, 1 on the CPU.");
ABSL_FLAG(bool, cuda_graphs, true,
          "Replay decode steps from CUDA graphs (one per batch-size and "
          "key-length bucket, captured on first use and after each adapter "
          "swap or Sleep). CUDA only: ignored on the CPU. On by default "
          "(2.3x the eager decode on an H200, docs/gpu.md).");
ABSL_FLAG(int64_t, decode_key_bucket, 0,
          "Decode attends over key positions rounded up to a multiple of this "
          "(masked), so shapes repeat; 0: exact, or 256 with --cuda_graphs.");
ABSL_FLAG(bool, share_prompt_kv, false,
          "Hold the prompt of a group of two or more completions once, in a "
          "prompt slot all of them read, instead of copying it into each "
          "completion's slot (which is still done when no slot is free for a "
          "host). Ignored with --cuda_graphs. Off by default: 0.6x the copied "
          "prompts' decode on an H200 (docs/gpu.md).");
ABSL_FLAG(int, cpu_threads, 0,
          "Intra-op threads on the CPU (ignored on CUDA). 0: one for models "
          "under 4M multiply-adds per token (the demo's decodes 2x faster on "
          "one thread of two), else LibTorch's default (one per core).");
ABSL_FLAG(
    std::string, adapter, "",
    "PEFT adapter directory to serve from the start (as --adapter_version).");
ABSL_FLAG(uint64_t, adapter_version, 1, "Version of --adapter.");
ABSL_FLAG(int64_t, max_queued_requests, 256,
          "Generate requests queued or running at once; more are refused with "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_queued_completions, 65536,
          "Completions (prompts x group size) queued or running at once; a "
          "request that would pass it is refused with RESOURCE_EXHAUSTED.");
ABSL_FLAG(std::string, adapter_dir, "",
          "Directory that LoadAdapter's paths are relative to (unset: paths "
          "refused).");
ABSL_FLAG(bool, merge_adapter, true,
          "On the CPU, add each adapter into a copy of the base model's linear "
          "weights when it is loaded, so that decoding runs no LoRA terms "
          "(rank 64 on qwen2-100m: 32.7 against 35.1 s per rollout); costs a "
          "copy of each adapted linear weight per resident adapter. float32 "
          "models only "
          "(a bfloat16 sum would drop small updates); ignored on CUDA.");
ABSL_FLAG(bool, pack_weights, true,
          "On the CPU (float32 models, LibTorch with MKL), keep MKL's packed "
          "form of each linear weight, and of each merged adapter's, for "
          "decoding: LibTorch otherwise repacks the weight in every product. "
          "Costs about 1.6x the linear weights' bytes more per copy; ignored "
          "on CUDA.");
ABSL_FLAG(bool, cuda_ipc, true,
          "Accept LoadAdapter by CUDA IPC handle from a process on this host "
          "and GPU (the learner's default when both share a GPU): the "
          "weights are copied device to device, no bytes over the socket.");

ABSL_FLAG(int, openai_port, 0,
          "Port of the OpenAI-compatible HTTP endpoint (/v1/models, "
          "/v1/completions, /v1/chat/completions) on --host, with the same "
          "TLS and token rules as gRPC; 0: off. Needs --model. "
          "docs/serving.md.");
ABSL_FLAG(std::string, served_model_name, "",
          "The base model's name on the OpenAI endpoint (adapters are "
          "<name>@v<version>); empty: the --model directory's name.");

int main(int argc, char** argv) {
  constexpr char kComponent[] = "rollout_server";
  const bool keep_freed_memory = microrl::KeepFreedMemory();
  microrl::BlockTerminationSignals();
  microrl::SetLogComponent(kComponent);
  MRL_LOG(INFO) << "freed memory: "
                << (keep_freed_memory ? "kept for reuse"
                                      : "returned to the kernel");
  microrl::SetUpFlagUsage(
      "Samples groups of completions from a base model plus LoRA adapter.");
  microrl::rpc::SetServerFlagDefaults(50051, 9401);
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);

  absl::StatusOr<microrl::rpc::ServerMainOptions> flags =
      microrl::rpc::ServingOptionsFromFlags(positional);
  if (!flags.ok()) return microrl::rpc::UsageError(kComponent, flags.status());
  microrl::rpc::ServerMainOptions server = *std::move(flags);
  absl::StatusOr<microrl::device::Device> device =
      microrl::device::ResolveDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    return microrl::rpc::UsageError(
        kComponent, absl::InvalidArgumentError(
                        absl::StrCat("--device: ", device.status().message())));
  }

  auto registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<microrl::rollout::Engine> engine;
  if (!absl::GetFlag(FLAGS_model).empty()) {
    microrl::rollout::ServerModelOptions model;
    model.model_dir = absl::GetFlag(FLAGS_model);
    model.device = *device;
    model.dtype = absl::GetFlag(FLAGS_dtype);
    model.kv_cache_mb = absl::GetFlag(FLAGS_kv_cache_mb);
    model.gpu_memory_gib = absl::GetFlag(FLAGS_gpu_memory_gib);
    model.max_model_len = absl::GetFlag(FLAGS_max_model_len);
    model.max_tokens = absl::GetFlag(FLAGS_max_tokens);
    model.max_group_size = absl::GetFlag(FLAGS_max_group_size);
    model.prefill_tokens = absl::GetFlag(FLAGS_prefill_tokens);
    model.decode_steps_per_sync = absl::GetFlag(FLAGS_decode_steps_per_sync);
    model.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
    model.decode_key_bucket = absl::GetFlag(FLAGS_decode_key_bucket);
    model.share_prompt_kv = absl::GetFlag(FLAGS_share_prompt_kv);
    model.cpu_threads = absl::GetFlag(FLAGS_cpu_threads);
    model.startup_adapter = absl::GetFlag(FLAGS_adapter);
    model.adapter_version = absl::GetFlag(FLAGS_adapter_version);
    model.merge_adapters = absl::GetFlag(FLAGS_merge_adapter);
    model.pack_weights = absl::GetFlag(FLAGS_pack_weights);
    model.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
    model.max_queued_completions = absl::GetFlag(FLAGS_max_queued_completions);
    if (model.cpu_threads < 0) {
      return microrl::rpc::UsageError(
          kComponent,
          absl::InvalidArgumentError("--cpu_threads: must be >= 0"));
    }
    if (model.max_queued_requests < 1 || model.max_queued_completions < 1) {
      return microrl::rpc::UsageError(
          kComponent, absl::InvalidArgumentError(
                          "--max_queued_requests and --max_queued_completions "
                          "must be >= 1"));
    }
    absl::StatusOr<std::shared_ptr<microrl::rollout::Engine>> started =
        microrl::rollout::StartEngine(model, *registry);
    if (!started.ok())
      return microrl::rpc::UsageError(kComponent, started.status());
    engine = *std::move(started);
  }
  std::unique_ptr<microrl::rollout::OpenAiServer> openai;
  if (const int port = absl::GetFlag(FLAGS_openai_port); port != 0) {
    if (port < 0 || port > 65535) {
      return microrl::rpc::UsageError(
          kComponent,
          absl::InvalidArgumentError("--openai_port must be in [0, 65535]"));
    }
    microrl::rollout::OpenAiServerOptions options;
    options.host = server.host;
    options.port = port;
    options.security = server.security;
    options.model_dir = absl::GetFlag(FLAGS_model);
    options.model_name = absl::GetFlag(FLAGS_served_model_name);
    if (options.model_name.empty()) {
      options.model_name = std::filesystem::path(options.model_dir)
                               .lexically_normal()
                               .filename();
      if (options.model_name.empty()) {
        options.model_name = std::filesystem::path(options.model_dir)
                                 .lexically_normal()
                                 .parent_path()
                                 .filename();
      }
    }
    absl::StatusOr<std::unique_ptr<microrl::rollout::OpenAiServer>> started =
        microrl::rollout::OpenAiServer::Start(options, engine);
    if (!started.ok()) {
      return microrl::rpc::UsageError(kComponent, started.status());
    }
    openai = *std::move(started);
  }
  microrl::rpc::ProcessIdentity identity(kComponent);
  microrl::rollout::RolloutService service(
      {*device, absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_adapter_dir),
       absl::GetFlag(FLAGS_cuda_ipc),
       absl::GetFlag(FLAGS_merge_adapter)},
      engine, identity);
  microrl::ExitWithoutStaticDestructors(
      microrl::rpc::RunServer(server, {{&service, "microrl.v1.Rollout"}},
                              registry, identity, [&openai] {
                                if (openai != nullptr) openai->Stop();
                              }));
}
