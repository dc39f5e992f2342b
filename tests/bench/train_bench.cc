// Training throughput of the learner's GRPO update (driven by train_bench.py,
// which runs transformers + PEFT on the same model and batch).
//
//   train_bench --model=DIR --device=cpu|cuda --rank=256
//               --samples=FILE [--packing] [--share_prompts]
//               --micro_batch_tokens=8192 --iters=2
//   train_bench ... --batch=16 --prompt=512 --completion=1024  (equal lengths)
//
// --samples names a JSON file {"samples": [{"prompt": [ids], "completion":
// [ids], "advantage": a}, ...]}: a GRPO-shaped batch (train_bench.py draws
// one). Without it, --batch random sequences of equal length.
//
// A random-weight model in DIR, a LoRA adapter of --rank on all seven linear
// layers of every decoder layer (float32 master weights and AdamW state; the
// forward runs in the model's dtype: bfloat16 on CUDA), and a batch of --batch
// random sequences with random advantages. Each timed iteration is one
// PolicyUpdater::Update, as the trainer runs it: micro-batches of at most
// --micro_batch_tokens padded tokens with gradient checkpointing, log-probs
// and entropies in chunks, the clipped GRPO loss, one AdamW step. Prints one
// JSON line.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/file.h"
#include "common/base/memory.h"
#include "common/device/device.h"
#include "common/model/decoder.h"
#include "common/model/lora.h"
#include "learner/optimizer.h"
#include "learner/policy_update.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(int64_t, rank, 256, "LoRA rank.");
ABSL_FLAG(int, batch, 16, "Sequences per update.");
ABSL_FLAG(int, prompt, 512, "Prompt tokens per sequence.");
ABSL_FLAG(int, completion, 1024, "Completion tokens per sequence.");
ABSL_FLAG(int64_t, micro_batch_tokens, 8192,
          "Padded tokens per forward/backward.");
ABSL_FLAG(int, iters, 2, "Timed updates (after one warm-up).");
ABSL_FLAG(std::string, profile, "",
          "Write LibTorch's operator trace of the timed updates here (Chrome "
          "trace JSON; slows them).");
ABSL_FLAG(bool, gradient_checkpointing, true, "Recompute layers in backward.");
ABSL_FLAG(std::string, samples, "",
          "JSON file of the batch's samples (prompt, completion, advantage).");
ABSL_FLAG(bool, packing, true, "Packed micro-batches (UpdateOptions).");
ABSL_FLAG(bool, share_prompts, true, "Shared prompts (UpdateOptions).");
ABSL_FLAG(
    std::string, ids, "",
    "JSON file: the --batch sequences of --prompt + --completion token ids "
    "(default: random ones).");

namespace {

using microrl::learner::Sample;
using microrl::model::LoraModule;

int Fail(const absl::Status& status) {
  std::cerr << status << "\n";
  return 1;
}

// The process's resident-set peak (VmHWM), and its reset (Linux).
int64_t PeakResidentBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}
void ResetPeakResident() { std::ofstream("/proc/self/clear_refs") << "5"; }

// The samples of a --samples file.
absl::StatusOr<std::vector<Sample>> ReadSamples(const std::string& path) {
  absl::StatusOr<std::string> text = microrl::ReadFileToString(path);
  if (!text.ok()) return text.status();
  const nlohmann::json json =
      nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("samples") ||
      !json["samples"].is_array()) {
    return absl::InvalidArgumentError(
        path +
        ": want {\"samples\": [{\"prompt\", \"completion\", "
        "\"advantage\"}, ...]}");
  }
  std::vector<Sample> out;
  try {
    for (const nlohmann::json& s : json["samples"]) {
      Sample sample;
      sample.prompt = s.at("prompt").get<std::vector<int32_t>>();
      sample.completion = s.at("completion").get<std::vector<int32_t>>();
      sample.advantage = s.at("advantage").get<float>();
      sample.rollout_logprobs.assign(sample.completion.size(), -12.0f);
      out.push_back(std::move(sample));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return out;
}

int Run() {
  absl::StatusOr<microrl::device::Device> device =
      microrl::device::ResolveDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status());
  microrl::model::DecoderOptions options;
  options.device = device->cuda ? at::Device(at::kCUDA, device->index)
                                : at::Device(at::kCPU);
  options.dtype = device->cuda ? at::kBFloat16 : at::kFloat;
  absl::StatusOr<std::unique_ptr<microrl::model::Decoder>> decoder =
      microrl::model::Decoder::Load(absl::GetFlag(FLAGS_model), options);
  if (!decoder.ok()) return Fail(decoder.status());
  microrl::model::LoraConfig lora;
  lora.rank = absl::GetFlag(FLAGS_rank);
  lora.alpha = 128;
  lora.targets = {LoraModule::kQ,   LoraModule::kK,    LoraModule::kV,
                  LoraModule::kO,   LoraModule::kGate, LoraModule::kUp,
                  LoraModule::kDown};
  absl::StatusOr<std::unique_ptr<microrl::model::LoraAdapter>> adapter =
      microrl::model::LoraAdapter::Create((*decoder)->config(), lora,
                                          options.device, 1);
  if (!adapter.ok()) return Fail(adapter.status());
  microrl::learner::AdamW optimizer((*adapter)->Parameters(), {});
  microrl::learner::UpdateOptions update;
  update.micro_batch_tokens = absl::GetFlag(FLAGS_micro_batch_tokens);
  update.gradient_checkpointing = absl::GetFlag(FLAGS_gradient_checkpointing);
  update.schedule.lr = 1e-6;
  update.packing = absl::GetFlag(FLAGS_packing);
  update.share_prompts = absl::GetFlag(FLAGS_share_prompts);
  microrl::learner::PolicyUpdater updater(**decoder, **adapter, optimizer,
                                          update);

  // Random sequences, rollout log-probs and advantages (fixed seed).
  at::manual_seed(0);
  const int batch = absl::GetFlag(FLAGS_batch);
  const int prompt = absl::GetFlag(FLAGS_prompt);
  const int completion = absl::GetFlag(FLAGS_completion);
  const int64_t vocab = (*decoder)->config().vocab_size;
  std::vector<Sample> samples(absl::GetFlag(FLAGS_samples).empty() ? batch : 0);
  if (!absl::GetFlag(FLAGS_samples).empty()) {
    absl::StatusOr<std::vector<Sample>> read =
        ReadSamples(absl::GetFlag(FLAGS_samples));
    if (!read.ok()) return Fail(read.status());
    samples = *std::move(read);
  }
  nlohmann::json given;  // --ids: the sequences (the Python driver's)
  if (!absl::GetFlag(FLAGS_ids).empty()) {
    absl::StatusOr<std::string> text =
        microrl::ReadFileToString(absl::GetFlag(FLAGS_ids));
    if (!text.ok()) return Fail(text.status());
    given = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (!given.is_array() || static_cast<int>(given.size()) != batch) {
      return Fail(absl::InvalidArgumentError(
          "--ids: want a JSON list of --batch lists of token ids"));
    }
  }
  for (int i = 0; i < static_cast<int>(samples.size()) &&
                  absl::GetFlag(FLAGS_samples).empty();
       ++i) {
    at::Tensor ids =
        at::randint(vocab, {prompt + completion}, at::kInt).contiguous();
    if (!given.is_null()) {
      if (!given[i].is_array() ||
          static_cast<int>(given[i].size()) != prompt + completion) {
        return Fail(absl::InvalidArgumentError(
            "--ids: each sequence needs --prompt + --completion ids"));
      }
      ids = at::tensor(given[i].get<std::vector<int32_t>>(), at::kInt);
    }
    const int32_t* data = ids.data_ptr<int32_t>();
    samples[i].prompt.assign(data, data + prompt);
    samples[i].completion.assign(data + prompt, data + prompt + completion);
    samples[i].rollout_logprobs.assign(completion, -12.0f);
    samples[i].advantage = i % 2 == 0 ? 1.0f : -1.0f;
  }

  std::vector<double> seconds;
  microrl::learner::UpdateStats stats;
  double first_entropy = 0;  // of the warm-up: the adapter is still a no-op
  int64_t step = 0;
  const int iters = absl::GetFlag(FLAGS_iters);
  int64_t peak_resident = 0;
  std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
  for (int i = -1; i < iters; ++i) {
    if (i == 0 && !absl::GetFlag(FLAGS_profile).empty()) {
      profile = std::make_unique<torch::autograd::profiler::RecordProfile>(
          absl::GetFlag(FLAGS_profile));
    }
    microrl::device::Synchronize(*device);
    microrl::device::ResetPeakMemory(*device);
    ResetPeakResident();
    const absl::Time start = absl::Now();
    absl::StatusOr<microrl::learner::UpdateStats> result =
        updater.Update(samples, step);
    if (!result.ok()) return Fail(result.status());
    microrl::device::Synchronize(*device);
    if (i >= 0) seconds.push_back(absl::ToDoubleSeconds(absl::Now() - start));
    if (i < 0) first_entropy = result->entropy;
    if (i >= 0) peak_resident = std::max(peak_resident, PeakResidentBytes());
    stats = *result;
  }
  profile.reset();  // writes the trace
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  int64_t tokens = 0;  // every sample's prompt and completion, no padding
  for (const Sample& s : samples) {
    tokens += static_cast<int64_t>(s.prompt.size() + s.completion.size());
  }
  const microrl::device::MemoryInfo memory =
      microrl::device::QueryMemory(*device);
  const nlohmann::json out = {
      {"tokens", tokens},
      {"completion_tokens", stats.tokens},
      {"micro_batches", stats.micro_batches},
      {"seconds", median},
      {"tokens_per_second", static_cast<double>(tokens) / median},
      {"peak_allocated_bytes", memory.peak_allocated_bytes},
      {"peak_resident_bytes", peak_resident},
      {"entropy", first_entropy},
      {"grad_norm", stats.grad_norm},
  };
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // As the learner with MICRORL_KEEP_FREED_MEMORY=1 (unless set otherwise).
  setenv("MICRORL_KEEP_FREED_MEMORY", "1", /*overwrite=*/0);
  microrl::KeepFreedMemory();
  absl::ParseCommandLine(argc, argv);
  return Run();
}
