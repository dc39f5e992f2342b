// All-reduce of a LoRA adapter's gradients through microrl's Communicator
// (c10d: Gloo on the CPU, NCCL on CUDA), as the learner's data-parallel ranks
// run it once per optimizer step: one tensor per A and B matrix of every
// targeted module, bucketed. Run under torchrun (or alone: world size 1, which
// on CUDA is the NCCL smoke test). Rank 0 prints one JSON line: seconds per
// all-reduce (median of --iters), bytes, bus bandwidth.
//
//   torchrun --nproc_per_node=2 --no-python build/tests/bench/allreduce_bench
//     --rank=64 [--layers=28 --hidden=1536 --intermediate=8960 --kv_dim=256]
//     [--device=cuda]   (one command line)
#include <ATen/ATen.h>

#include <algorithm>
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "common/distributed/communicator.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int64_t, rank, 64, "LoRA rank.");
ABSL_FLAG(int64_t, layers, 28, "Decoder layers (Qwen2.5-1.5B: 28).");
ABSL_FLAG(int64_t, hidden, 1536, "Hidden size.");
ABSL_FLAG(int64_t, intermediate, 8960, "MLP size.");
ABSL_FLAG(int64_t, kv_dim, 256,
          "Key/value projection width (heads x head dim).");
ABSL_FLAG(std::string, device, "cpu",
          "cpu (Gloo) or cuda (NCCL, the rank's GPU).");
ABSL_FLAG(int, iters, 3, "Timed all-reduces (after one warm-up).");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<microrl::distributed::LaunchEnv> launch =
      microrl::distributed::ReadLaunchEnv();
  if (!launch.ok()) {
    std::cerr << launch.status() << "\n";
    return 1;
  }
  microrl::distributed::CommunicatorOptions options;
  options.cuda = absl::GetFlag(FLAGS_device) == "cuda";
  options.cuda_device = launch->local_rank;
  absl::StatusOr<std::unique_ptr<microrl::distributed::Communicator>> comm =
      microrl::distributed::Communicator::Create(*launch, options);
  if (!comm.ok()) {
    std::cerr << comm.status() << "\n";
    return 1;
  }
  // (in, out) of the seven targeted projections of one layer.
  const int64_t h = absl::GetFlag(FLAGS_hidden);
  const int64_t m = absl::GetFlag(FLAGS_intermediate);
  const int64_t kv = absl::GetFlag(FLAGS_kv_dim);
  const std::vector<std::pair<int64_t, int64_t>> modules = {
      {h, h}, {h, kv}, {h, kv}, {h, h}, {h, m}, {h, m}, {m, h}};
  const int64_t r = absl::GetFlag(FLAGS_rank);
  const at::TensorOptions on =
      at::TensorOptions().dtype(at::kFloat).device((*comm)->device());
  std::vector<at::Tensor> grads;
  int64_t elements = 0;
  for (int64_t layer = 0; layer < absl::GetFlag(FLAGS_layers); ++layer) {
    for (const auto& [in, out] : modules) {
      grads.push_back(at::ones({r, in}, on));   // A
      grads.push_back(at::ones({out, r}, on));  // B
      elements += r * (in + out);
    }
  }
  std::vector<double> seconds;
  for (int i = 0; i <= absl::GetFlag(FLAGS_iters); ++i) {
    for (at::Tensor& g : grads) g.fill_(1);
    // Reading a value waits for the device (and the collective, which the
    // current stream waits on).
    (void)grads.back().sum().item<float>();
    const absl::Time start = absl::Now();
    if (absl::Status s = (*comm)->AllReduce(grads); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
    (void)grads.back().sum().item<float>();
    if (i > 0) seconds.push_back(absl::ToDoubleSeconds(absl::Now() - start));
  }
  // Every element is the world size: the collective summed every rank's ones.
  const double expected = (*comm)->world_size();
  for (const at::Tensor& g : grads) {
    if (!at::all(g == expected).item<bool>()) {
      std::cerr << "all-reduce gave wrong values\n";
      return 1;
    }
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  const double bytes = 4.0 * static_cast<double>(elements);
  const int n = (*comm)->world_size();
  if ((*comm)->rank() == 0) {
    nlohmann::json out = {
        {"backend", (*comm)->backend()},
        {"world_size", n},
        {"lora_rank", r},
        {"elements", elements},
        {"bytes", bytes},
        {"seconds", median},
        // What a ring all-reduce moves per rank: 2 (n - 1) / n of the data.
        {"bus_gb_per_s", n > 1 ? bytes * 2 * (n - 1) / n / median / 1e9 : 0.0}};
    std::cout << out.dump() << std::endl;
  }
  return 0;
}
