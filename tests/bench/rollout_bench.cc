// Times the rollout engine (continuous batching, sampling, prefix-shared
// prefill) on the CPU or a GPU; driven by rollout_bench.py, which runs
// transformers `generate` on the same model, prompts and lengths and prints the
// ratio.
//
//   rollout_bench --model=DIR --prompts=FILE [--group=8] [--new_tokens=64]
//                 [--iters=1] [--device=cpu] [--dtype=auto] [--threads=0]
//                 [--adapter=DIR] [--merge_adapter] [--pack_weights] [--top_p=1]
//                 [--op_times]
// FILE holds a JSON list of prompts (lists of token ids). Every completion runs
// to new_tokens (EOS ignored), sampled at temperature 1 (and --top_p). Prints
// one JSON line:
// {"tokens", "seconds", "tokens_per_second", "ops_per_decode_step"...}: the
// last, counted after the timed run, is the ATen operators one decode step of
// the whole batch dispatches (on the CPU: the same code as on a GPU but for
// device-specific branches), a measure of what kernel launches cost.
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <string_view>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "common/base/file.h"
#include "common/base/memory.h"
#include "common/device/device.h"
#include "common/model/loader.h"
#include "nlohmann/json.hpp"
#include "rollout_server/engine.h"
#include "rollout_server/server_setup.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory.");
ABSL_FLAG(std::string, prompts, "",
          "JSON file: a list of prompts, each a list of token ids.");
ABSL_FLAG(int, group, 8, "Completions per prompt.");
ABSL_FLAG(int, new_tokens, 64, "Tokens per completion.");
ABSL_FLAG(int, iters, 1, "Timed repetitions (after one short warm-up).");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, dtype, "auto", "auto, float32, bfloat16 or float16.");
ABSL_FLAG(int, threads, 0, "Intra-op threads (0: LibTorch's default).");
ABSL_FLAG(int64_t, decode_steps_per_sync, 0,
          "As the rollout server's flag (0: 8 on CUDA, 1 on the CPU).");
ABSL_FLAG(bool, cuda_graphs, false, "As the rollout server's flag.");
ABSL_FLAG(bool, share_prompt_kv, false, "As the rollout server's flag.");
ABSL_FLAG(bool, merge_adapter, true, "As the rollout server's flag.");
ABSL_FLAG(bool, pack_weights, true, "As the rollout server's flag.");
ABSL_FLAG(double, top_p, 1.0, "Nucleus sampling's p (1: off).");
ABSL_FLAG(bool, op_times, false,
          "Also print the top-level ATen operators' wall time per decode step "
          "(\"op_ms_per_decode_step\", measured like ops_per_decode_step).");
ABSL_FLAG(std::string, adapter, "",
          "A PEFT adapter directory every completion runs with (as the rollout "
          "server's --adapter).");

namespace {

absl::StatusOr<microrl::rollout::GenerationResult> Generate(
    microrl::rollout::Engine& engine,
    microrl::rollout::GenerationRequest request) {
  std::promise<absl::StatusOr<microrl::rollout::GenerationResult>> promise;
  auto future = promise.get_future();
  engine.Submit(
      std::move(request),
      [&promise](absl::StatusOr<microrl::rollout::GenerationResult> result) {
        promise.set_value(std::move(result));
      });
  return future.get();
}

// Counts the ATen operators dispatched while `counting` (after the timed run,
// so the count does not slow it): those our code calls (top level) and all,
// nested ones included (e.g. linear's addmm). The engine runs on its own
// thread, hence a global callback and a per-thread depth.
std::atomic<bool> counting{false};
std::atomic<int64_t> top_level_ops{0};
std::atomic<int64_t> computing_ops{0};  // top level, views and no-ops left out
std::atomic<int64_t> all_ops{0};
thread_local int depth = 0;

// Operators that only make a view or metadata (no kernel on a GPU).
bool IsView(std::string_view name) {
  static const auto* const kViews =
      new std::set<std::string_view>{"aten::view",
                                     "aten::narrow",
                                     "aten::reshape",
                                     "aten::permute",
                                     "aten::transpose",
                                     "aten::unsqueeze",
                                     "aten::squeeze",
                                     "aten::expand",
                                     "aten::slice",
                                     "aten::select",
                                     "aten::t",
                                     "aten::as_strided",
                                     "aten::alias",
                                     "aten::_reshape_alias",
                                     "aten::detach",
                                     "aten::empty",
                                     "aten::empty_strided",
                                     "aten::to",
                                     "aten::_to_copy_noop",
                                     "aten::contiguous",
                                     "aten::size",
                                     "aten::stride",
                                     "aten::lift_fresh",
                                     "aten::result_type"};
  return kViews->count(name) > 0;
}

// Wall time of top-level operators by name while counting (--op_times).
std::mutex op_times_mutex;
std::map<std::string, double> op_seconds;

struct Depth : at::ObserverContext {
  absl::Time start;
};

std::unique_ptr<at::ObserverContext> OnOpStart(const at::RecordFunction& fn) {
  if (counting.load(std::memory_order_relaxed)) {
    all_ops.fetch_add(1, std::memory_order_relaxed);
    if (depth == 0) {
      top_level_ops.fetch_add(1, std::memory_order_relaxed);
      if (!IsView(fn.name())) {
        computing_ops.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  ++depth;
  auto context = std::make_unique<Depth>();  // non-null: OnOpEnd runs
  if (depth == 1 && counting.load(std::memory_order_relaxed)) {
    context->start = absl::Now();
  }
  return context;
}

void OnOpEnd(const at::RecordFunction& fn, at::ObserverContext* context) {
  --depth;
  const absl::Time start = static_cast<Depth*>(context)->start;
  if (depth == 0 && start != absl::Time()) {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    std::lock_guard<std::mutex> lock(op_times_mutex);
    op_seconds[std::string(fn.name())] += seconds;
  }
}

int Fail(const std::string& message) {
  std::cerr << "rollout_bench: " << message << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // As the rollout server with MICRORL_KEEP_FREED_MEMORY=1 (unless set).
  setenv("MICRORL_KEEP_FREED_MEMORY", "1", /*overwrite=*/0);
  microrl::KeepFreedMemory();
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_threads) > 0)
    at::set_num_threads(absl::GetFlag(FLAGS_threads));
  absl::StatusOr<std::string> text =
      microrl::ReadFileToString(absl::GetFlag(FLAGS_prompts));
  if (!text.ok()) return Fail(text.status().ToString());
  std::vector<std::vector<int32_t>> prompts;
  try {
    prompts =
        nlohmann::json::parse(*text).get<std::vector<std::vector<int32_t>>>();
  } catch (const std::exception& e) {
    return Fail(absl::GetFlag(FLAGS_prompts) + ": " + e.what());
  }
  size_t longest = 0;
  for (const auto& prompt : prompts) longest = std::max(longest, prompt.size());
  const int group = absl::GetFlag(FLAGS_group);
  const int new_tokens = absl::GetFlag(FLAGS_new_tokens);
  absl::StatusOr<microrl::device::Device> device =
      microrl::device::ResolveDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status().ToString());

  microrl::rollout::ServerModelOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.device = *device;
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.max_model_len = static_cast<int64_t>(longest) + new_tokens;
  options.max_group_size = group;
  options.max_tokens = new_tokens;
  options.decode_steps_per_sync = absl::GetFlag(FLAGS_decode_steps_per_sync);
  options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  options.startup_adapter = absl::GetFlag(FLAGS_adapter);
  options.merge_adapters = absl::GetFlag(FLAGS_merge_adapter);
  options.pack_weights = absl::GetFlag(FLAGS_pack_weights);
  options.share_prompt_kv = absl::GetFlag(FLAGS_share_prompt_kv);
  // Room for every sequence at once: prompts x group slots of max_model_len.
  absl::StatusOr<microrl::model::ModelConfig> config =
      microrl::model::LoadModelConfig(options.model_dir);
  if (!config.ok()) return Fail(config.status().ToString());
  absl::StatusOr<at::ScalarType> dtype =
      microrl::model::ParseDtype(options.dtype, *device, "--dtype");
  if (!dtype.ok()) return Fail(dtype.status().ToString());
  const int64_t slot_bytes =
      2 * config->num_layers * config->num_kv_heads * config->head_dim *
      static_cast<int64_t>(c10::elementSize(*dtype)) * options.max_model_len;
  const int64_t sequences = static_cast<int64_t>(prompts.size()) * group;
  // And the slots that hold the prompts once (share_prompt_kv; the same budget
  // either way, so variants compare at equal memory).
  const int64_t prompts_per_host = std::max<int64_t>(
      1, (options.max_model_len - 1) / static_cast<int64_t>(longest));
  const int64_t host_slots =
      group >= 2
          ? (static_cast<int64_t>(prompts.size()) + prompts_per_host - 1) /
                prompts_per_host
          : 0;
  options.kv_cache_mb =
      ((sequences + host_slots) * slot_bytes + (1 << 20) - 1) >> 20;
  prometheus::Registry registry;
  absl::StatusOr<std::shared_ptr<microrl::rollout::Engine>> engine =
      microrl::rollout::StartEngine(options, registry);
  if (!engine.ok()) return Fail(engine.status().ToString());

  auto request = [&](int max_tokens, uint64_t seed) {
    microrl::rollout::GenerationRequest r;
    r.prompts = prompts;
    r.group_size = group;
    r.sampling.temperature = 1.0;
    r.sampling.top_p = absl::GetFlag(FLAGS_top_p);
    r.sampling.max_tokens = max_tokens;
    r.sampling.ignore_eos = true;
    r.sampling.seed = seed;
    return r;
  };
  if (auto warm = Generate(**engine, request(4, 1)); !warm.ok()) {
    return Fail(warm.status().ToString());
  }
  int64_t tokens = 0;
  nlohmann::json sample;  // the first completion's start, to compare variants
  const absl::Time start = absl::Now();
  for (int i = 0; i < absl::GetFlag(FLAGS_iters); ++i) {
    absl::StatusOr<microrl::rollout::GenerationResult> result =
        Generate(**engine, request(new_tokens, 100 + i));
    if (!result.ok()) return Fail(result.status().ToString());
    for (const auto& g : result->groups) {
      for (const auto& completion : g) tokens += completion.token_ids.size();
    }
    const auto& first = result->groups[0][0];
    const size_t shown = std::min<size_t>(32, first.token_ids.size());
    sample = {
        {"token_ids", std::vector<int32_t>(first.token_ids.begin(),
                                           first.token_ids.begin() + shown)},
        {"logprobs", std::vector<float>(first.logprobs.begin(),
                                        first.logprobs.begin() + shown)}};
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  // Operators per decode step of the whole batch: the difference between runs
  // of 10 and 2 new tokens over the 8 steps between them (prefill cancels).
  at::addGlobalCallback(at::RecordFunctionCallback(&OnOpStart, &OnOpEnd)
                            .scopes({at::RecordScope::FUNCTION}));
  auto count = [&](int max_tokens) -> std::array<int64_t, 3> {
    op_seconds.clear();
    top_level_ops = 0;
    computing_ops = 0;
    all_ops = 0;
    counting = true;
    absl::StatusOr<microrl::rollout::GenerationResult> result =
        Generate(**engine, request(max_tokens, 7));
    counting = false;
    if (!result.ok()) return {-1, -1, -1};
    return {top_level_ops.load(), computing_ops.load(), all_ops.load()};
  };
  const std::array<int64_t, 3> two = count(2);
  const std::map<std::string, double> two_seconds = op_seconds;
  const std::array<int64_t, 3> ten = count(10);
  const bool counted = two[0] >= 0 && ten[0] >= 0;
  auto per_step = [&](int i) {
    return counted ? static_cast<double>(ten[i] - two[i]) / 8.0 : -1.0;
  };
  nlohmann::json out = {
      {"tokens", tokens},
      {"seconds", seconds},
      {"tokens_per_second", tokens / seconds},
      {"slots", (*engine)->Snapshot().num_slots},
      {"shared_prompts", (*engine)->Snapshot().shared_prompts},
      {"copied_prompts", (*engine)->Snapshot().copied_prompts},
      {"ops_per_decode_step", per_step(0)},            // as our code calls them
      {"computing_ops_per_decode_step", per_step(1)},  // of those, not views
      {"all_ops_per_decode_step", per_step(2)},        // nested ones too
      {"reserved_bytes", microrl::device::QueryMemory(*device).reserved_bytes},
      {"sample", sample}};
  if (absl::GetFlag(FLAGS_op_times)) {
    // Milliseconds per decode step, largest first.
    std::vector<std::pair<double, std::string>> times;
    for (const auto& [name, seconds] : op_seconds) {
      auto it = two_seconds.find(name);
      const double before = it == two_seconds.end() ? 0.0 : it->second;
      times.push_back({(seconds - before) * 1e3 / 8.0, name});
    }
    std::sort(times.rbegin(), times.rend());
    nlohmann::json ms = nlohmann::json::array();
    for (const auto& [milliseconds, name] : times) {
      ms.push_back({name, milliseconds});
    }
    out["op_ms_per_decode_step"] = ms;
  }
  std::cout << out.dump() << std::endl;
  std::fflush(stdout);
  // The engine thread is joined by the destructor.
  return 0;
}
