// Adapter publish latency: the learner's side of handing a LoRA adapter to a
// running rollout server, timed end to end (driven by publish_bench.py).
//
//   publish_bench --model=DIR --rollout=HOST:PORT --rank=256 --iters=5
//                 [--device=cpu|cuda] [--dtype=bfloat16|float32]
//
// Makes a random adapter of the given rank on every linear layer of the model
// in DIR (its config.json), on --device as the learner holds it, then
// publishes it --iters times with increasing versions, as the trainer does
// after each step: serialize (device to host, safetensors) then LoadAdapter
// over gRPC (streamed in chunks with its SHA-256; the server checks, parses,
// copies to its device and swaps). Prints one JSON line with the median and
// every sample.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "common/device/device.h"
#include "common/model/config.h"
#include "common/model/cuda_ipc.h"
#include "common/model/lora.h"
#include "learner/rollout_client.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "Model directory (config.json).");
ABSL_FLAG(std::string, rollout, "", "Rollout server address.");
ABSL_FLAG(int64_t, rank, 256, "LoRA rank.");
ABSL_FLAG(double, alpha, 128, "LoRA alpha.");
ABSL_FLAG(int, iters, 5, "Publishes to time (after one warm-up).");
ABSL_FLAG(std::string, device, "cpu", "Where the learner's adapter lives.");
ABSL_FLAG(std::string, dtype, "bfloat16",
          "dtype of the published weights: bfloat16 or float32.");
ABSL_FLAG(std::string, transport, "grpc",
          "grpc: serialize and stream the bytes; cuda_ipc: pack on the GPU and "
          "hand over a CUDA IPC handle (the learner's two ways).");

namespace {

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

absl::Status Run() {
  using microrl::model::LoraModule;
  absl::StatusOr<microrl::model::ModelConfig> config =
      microrl::model::LoadModelConfig(absl::GetFlag(FLAGS_model));
  if (!config.ok()) return config.status();
  absl::StatusOr<microrl::device::Device> device =
      microrl::device::ResolveDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return device.status();
  const at::Device at_device = device->cuda
                                   ? at::Device(at::kCUDA, device->index)
                                   : at::Device(at::kCPU);
  microrl::model::LoraConfig lora;
  lora.rank = absl::GetFlag(FLAGS_rank);
  lora.alpha = absl::GetFlag(FLAGS_alpha);
  lora.targets = {LoraModule::kQ,   LoraModule::kK,    LoraModule::kV,
                  LoraModule::kO,   LoraModule::kGate, LoraModule::kUp,
                  LoraModule::kDown};
  absl::StatusOr<std::unique_ptr<microrl::model::LoraAdapter>> adapter =
      microrl::model::LoraAdapter::Create(*config, lora, at_device, 1);
  if (!adapter.ok()) return adapter.status();
  {
    at::NoGradGuard no_grad;
    for (const at::Tensor& p : (*adapter)->Parameters()) {
      if (p.abs().sum().item<double>() == 0) p.normal_(0, 1e-3);
    }
  }
  const at::ScalarType dtype =
      absl::GetFlag(FLAGS_dtype) == "float32" ? at::kFloat : at::kBFloat16;
  const std::string config_json = (*adapter)->PeftConfigJson("bench");

  absl::StatusOr<std::unique_ptr<microrl::learner::RolloutClient>> client =
      microrl::learner::RolloutClient::Create(absl::GetFlag(FLAGS_rollout), {});
  if (!client.ok()) return client.status();
  absl::StatusOr<microrl::v1::RolloutInfo> info = (*client)->GetInfo();
  if (!info.ok()) return info.status();
  uint64_t version = info->adapter_version();
  std::vector<double> serialize, rpc, total, receive, load, swap;
  uint64_t bytes = 0;
  const int iters = absl::GetFlag(FLAGS_iters);
  const bool ipc = absl::GetFlag(FLAGS_transport) == "cuda_ipc";
  at::Tensor staging;
  for (int i = -1; i < iters; ++i) {  // i = -1: warm-up
    microrl::device::Synchronize(*device);
    const absl::Time start = absl::Now();
    absl::StatusOr<microrl::v1::LoadAdapterResponse> loaded;
    absl::Time serialized;
    if (ipc) {
      absl::StatusOr<microrl::model::IpcAdapter> shared =
          microrl::model::ExportAdapter(**adapter, dtype, staging);
      if (!shared.ok()) return shared.status();
      serialized = absl::Now();
      loaded = (*client)->LoadAdapterIpc(++version, config_json, *shared);
      bytes = static_cast<uint64_t>(shared->bytes);
    } else {
      absl::StatusOr<std::string> weights = (*adapter)->PeftSafetensors(dtype);
      if (!weights.ok()) return weights.status();
      serialized = absl::Now();
      loaded = (*client)->LoadAdapter(++version, config_json, *weights);
      bytes = weights->size();
    }
    const absl::Time end = absl::Now();
    if (!loaded.ok()) return loaded.status();
    if (i < 0) continue;
    serialize.push_back(absl::ToDoubleSeconds(serialized - start));
    rpc.push_back(absl::ToDoubleSeconds(end - serialized));
    total.push_back(absl::ToDoubleSeconds(end - start));
    receive.push_back(loaded->receive_seconds());
    load.push_back(loaded->load_seconds());
    swap.push_back(loaded->swap_seconds());
  }
  // The server checks what a sender claims: a real handle with a size or an
  // offset past its allocation is refused (INVALID_ARGUMENT) before anything
  // is read, and the server goes on serving and loading.
  nlohmann::json validation = nullptr;
  if (ipc) {
    absl::StatusOr<microrl::model::IpcAdapter> shared =
        microrl::model::ExportAdapter(**adapter, dtype, staging);
    if (!shared.ok()) return shared.status();
    const int64_t past = int64_t{4} << 30;
    microrl::model::IpcAdapter longer = *shared;
    longer.bytes += past;
    microrl::model::IpcAdapter shifted = *shared;
    shifted.offset += past;
    auto code = [](const absl::Status& s) {
      return std::string(absl::StatusCodeToString(s.code()));
    };
    const absl::Status too_long =
        (*client)->LoadAdapterIpc(version + 1, config_json, longer).status();
    const absl::Status too_far =
        (*client)->LoadAdapterIpc(version + 1, config_json, shifted).status();
    const bool alive = (*client)->GetInfo().ok();
    const absl::Status after =
        (*client)->LoadAdapterIpc(++version, config_json, *shared).status();
    validation = {
        {"size_past_allocation", code(too_long)},
        {"offset_past_allocation", code(too_far)},
        {"alive_after", alive},
        {"valid_after", code(after)},
        {"ok", too_long.code() == absl::StatusCode::kInvalidArgument &&
                   too_far.code() == absl::StatusCode::kInvalidArgument &&
                   alive && after.ok()}};
  }
  const nlohmann::json out = {
      {"ipc_validation", validation},
      {"transport", absl::GetFlag(FLAGS_transport)},
      {"rank", lora.rank},
      {"dtype", absl::GetFlag(FLAGS_dtype)},
      {"parameters", (*adapter)->NumParameters()},
      {"bytes", bytes},
      {"serialize_s", Median(serialize)},
      {"rpc_s", Median(rpc)},
      {"receive_s", Median(receive)},
      {"load_s", Median(load)},
      {"swap_s", Median(swap)},
      {"total_s", Median(total)},
      {"total_samples_s", total},
  };
  std::cout << out.dump() << std::endl;
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = Run();
  if (status.ok()) return 0;
  std::cerr << status << "\n";
  return 1;
}
