// Times microrl's decoder on the CPU or a GPU; driven by model_bench.py, which
// runs transformers on the same model and inputs and prints the ratio.
//
//   model_bench --model=DIR --mode=score|decode [--batch=4] [--seq=256]
//               [--prompt=32] [--new_tokens=64] [--iters=3] [--device=cpu]
//               [--threads=0]
// Prints one JSON line: {"mode", "tokens", "seconds", "tokens_per_second"}.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/device/device.h"
#include "common/model/decoder.h"
#include "common/model/kv_cache.h"
#include "common/model/token_stats.h"
#include "tests/support/decoder_step.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory.");
ABSL_FLAG(std::string, mode, "score",
          "score: log-probs of whole sequences; decode: greedy generation.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(int, batch, 4, "Sequences per batch.");
ABSL_FLAG(int, seq, 256, "score: tokens per sequence.");
ABSL_FLAG(int, prompt, 32, "decode: prompt tokens.");
ABSL_FLAG(int, new_tokens, 64, "decode: generated tokens per sequence.");
ABSL_FLAG(int, iters, 3, "Timed repetitions (after one warm-up).");
ABSL_FLAG(int, threads, 0, "Intra-op threads (0: LibTorch's default).");

namespace {

using microrl::model::Decoder;
using microrl::testing::DecoderTestPeer;

void Sync(const at::Device& device) {
  if (device.is_cuda()) microrl::device::Synchronize({true, device.index()});
}

// One pass of the scoring path: forward, then chunked log-probs and entropies.
void Score(const Decoder& decoder, const at::Tensor& ids) {
  const at::Tensor hidden = *decoder.Forward(ids, {});
  const int64_t steps = ids.size(1) - 1;
  const at::Tensor rows =
      hidden.narrow(1, 0, steps).reshape({-1, hidden.size(-1)});
  const at::Tensor targets = ids.narrow(1, 1, steps).reshape({-1});
  auto stats = microrl::model::ComputeTokenStats(
      rows, decoder.lm_head(), targets, 1.0,
      microrl::model::ChunkRowsForBudget(decoder.config().vocab_size));
  (void)stats;
}

// Greedy generation of new_tokens per prompt with the KV cache.
void Decode(const Decoder& decoder, const at::Tensor& prompts, int new_tokens) {
  const int64_t batch = prompts.size(0);
  auto cache = microrl::model::KvCache::Create(
      decoder.config(), {batch, prompts.size(1) + new_tokens,
                         decoder.options().device, decoder.options().dtype});
  std::vector<int64_t> slots(batch), counts(batch, prompts.size(1));
  for (int64_t i = 0; i < batch; ++i) slots[i] = i;
  at::Tensor hidden =
      *DecoderTestPeer::Step(decoder, prompts, slots, counts, *cache, {});
  at::Tensor next =
      decoder.Logits(hidden.select(1, prompts.size(1) - 1)).argmax(-1);
  std::vector<int64_t> ones(batch, 1);
  for (int t = 1; t < new_tokens; ++t) {
    hidden = *DecoderTestPeer::Step(decoder, next.unsqueeze(1), slots, ones,
                                    *cache, {});
    next = decoder.Logits(hidden.select(1, 0)).argmax(-1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_threads) > 0)
    at::set_num_threads(absl::GetFlag(FLAGS_threads));
  auto device = microrl::device::ResolveDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(device.status().message()).c_str());
    return 2;
  }
  microrl::model::DecoderOptions options;
  options.device = device->cuda ? at::Device(at::kCUDA, device->index)
                                : at::Device(at::kCPU);
  options.dtype = device->cuda ? at::kBFloat16 : at::kFloat;
  auto decoder = Decoder::Load(absl::GetFlag(FLAGS_model), options);
  if (!decoder.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(decoder.status().message()).c_str());
    return 1;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int batch = absl::GetFlag(FLAGS_batch);
  at::manual_seed(0);
  c10::InferenceMode inference;
  const int64_t vocab = (*decoder)->config().vocab_size;
  const at::Tensor ids =
      at::randint(0, vocab,
                  {batch, mode == "score" ? absl::GetFlag(FLAGS_seq)
                                          : absl::GetFlag(FLAGS_prompt)},
                  at::kLong)
          .to(options.device);
  auto run = [&] {
    if (mode == "score") {
      Score(**decoder, ids);
    } else {
      Decode(**decoder, ids, absl::GetFlag(FLAGS_new_tokens));
    }
    Sync(options.device);
  };
  run();  // warm-up
  const int iters = absl::GetFlag(FLAGS_iters);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) run();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  const double tokens = static_cast<double>(iters) * batch *
                        (mode == "score" ? absl::GetFlag(FLAGS_seq)
                                         : absl::GetFlag(FLAGS_new_tokens));
  std::printf(
      "{\"mode\": \"%s\", \"tokens\": %.0f, \"seconds\": %.4f, "
      "\"tokens_per_second\": %.1f}\n",
      mode.c_str(), tokens, seconds, tokens / seconds);
  return 0;
}
