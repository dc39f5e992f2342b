#include "rollout_server/decode_graphs.h"

#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <exception>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/base/logging.h"
#include "common/model/tensor_io.h"

namespace microrl::rollout {

struct DecodeGraphs::Impl {
  struct Graph {
    at::cuda::CUDAGraph graph;
    at::Tensor ids;        // [rows, 1] int64, static input
    at::Tensor positions;  // [rows] int64, static input
    at::Tensor hidden;     // [rows, 1, hidden], static output
  };
  const model::Decoder& decoder;
  int64_t max_rows;
  c10::DeviceIndex device;
  at::cuda::MempoolId_t pool = at::cuda::graph_pool_handle();
  // (rows, key length, adapter in use)
  std::map<std::tuple<int64_t, int64_t, bool>, std::unique_ptr<Graph>> graphs;
  std::unique_ptr<model::LoraAdapter> adapter;  // the graphs' copy
  bool broken = false;  // a capture failed: eager from then on

  void Drop(bool adapter_graphs_only) {
    for (auto it = graphs.begin(); it != graphs.end();) {
      it = !adapter_graphs_only || std::get<2>(it->first) ? graphs.erase(it)
                                                          : std::next(it);
    }
    if (!graphs.empty()) return;
    // A pool no graph uses any more cannot take new captures: release its
    // memory and start another.
    at::accelerator::synchronizeDevice(device);
    c10::cuda::CUDACachingAllocator::emptyCache();
    pool = at::cuda::graph_pool_handle();
  }
};

DecodeGraphs::DecodeGraphs(const model::Decoder& decoder, int64_t max_rows)
    : impl_(new Impl{decoder, max_rows, decoder.options().device.index()}) {}

DecodeGraphs::~DecodeGraphs() = default;

void DecodeGraphs::Clear() { impl_->Drop(/*adapter_graphs_only=*/false); }

int64_t DecodeGraphs::size() const {
  return static_cast<int64_t>(impl_->graphs.size());
}

void DecodeGraphs::SetAdapter(const model::LoraAdapter& adapter) {
  c10::InferenceMode inference;
  const std::vector<at::Tensor> source = adapter.Parameters();
  if (impl_->adapter != nullptr) {
    const std::vector<at::Tensor> target = impl_->adapter->Parameters();
    bool same = target.size() == source.size() &&
                impl_->adapter->config().targets == adapter.config().targets;
    for (size_t i = 0; same && i < source.size(); ++i) {
      same = source[i].sizes() == target[i].sizes() &&
             source[i].scalar_type() == target[i].scalar_type();
    }
    for (int64_t layer = 0; same && layer < adapter.num_layers(); ++layer) {
      for (model::LoraModule module : adapter.config().targets) {
        const model::LoraLinear* a = adapter.Find(layer, module);
        const model::LoraLinear* b = impl_->adapter->Find(layer, module);
        same = same && (a == nullptr) == (b == nullptr) &&
               (a == nullptr || a->scale == b->scale);  // a captured constant
      }
    }
    if (same) {
      for (size_t i = 0; i < source.size(); ++i) target[i].copy_(source[i]);
      return;  // replays after this see the new weights (same stream)
    }
  }
  impl_->Drop(/*adapter_graphs_only=*/true);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (int64_t layer = 0; layer < adapter.num_layers(); ++layer) {
    for (model::LoraModule module : adapter.config().targets) {
      if (const model::LoraLinear* linear = adapter.Find(layer, module)) {
        named.emplace_back(model::PeftTensorName(layer, module, true),
                           linear->a);
        named.emplace_back(model::PeftTensorName(layer, module, false),
                           linear->b);
      }
    }
  }
  const at::Tensor first = source.front();
  absl::StatusOr<std::unique_ptr<model::LoraAdapter>> copy =
      model::LoraAdapter::FromTensors(adapter.PeftConfigJson(""), named,
                                      "graph copy", impl_->decoder.config(),
                                      first.device(), first.scalar_type(),
                                      /*copy=*/true);
  if (!copy.ok()) {
    MRL_LOG(WARNING) << "CUDA graphs: cannot copy the adapter ("
                     << copy.status() << "); decoding eagerly from now on";
    impl_->broken = true;
    impl_->adapter.reset();
    return;
  }
  // The same one-matmul A per q/k/v and gate/up as the engine's adapter; the
  // copies above go into it through the modules' views.
  (*copy)->FuseInputProjections();
  impl_->adapter = *std::move(copy);
}

at::Tensor DecodeGraphs::Run(const at::Tensor& ids, const at::Tensor& positions,
                             int64_t key_length, model::KvCache& cache,
                             const model::RunOptions& run) {
  c10::InferenceMode inference;
  model::RunOptions graph_run = run;
  if (run.adapter != nullptr) graph_run.adapter = impl_->adapter.get();
  if (impl_->broken || (run.adapter != nullptr && impl_->adapter == nullptr)) {
    return impl_->decoder.DecodeOnDevice(ids, positions, 0, key_length, cache,
                                         run);
  }
  const int64_t n = ids.size(0);
  int64_t rows = 1;
  while (rows < n) rows *= 2;
  rows = std::min(rows, impl_->max_rows);
  const auto key = std::make_tuple(rows, key_length, run.adapter != nullptr);
  auto fill = [&](Impl::Graph& g) {
    g.ids.narrow(0, 0, n).copy_(ids.view({n, 1}));
    g.positions.narrow(0, 0, n).copy_(positions);
    if (rows > n) {
      g.ids.narrow(0, n, rows - n).zero_();
      g.positions.narrow(0, n, rows - n).zero_();
    }
  };
  auto it = impl_->graphs.find(key);
  if (it != impl_->graphs.end()) {
    Impl::Graph& g = *it->second;
    fill(g);
    g.graph.replay();
    return g.hidden.narrow(0, 0, n);
  }
  // First use: this step runs eagerly on a side stream (it is the warm-up the
  // capture needs, and its result is this step's), then the same step is
  // captured (capturing executes nothing).
  auto g = std::make_unique<Impl::Graph>();
  const auto options = ids.options().dtype(at::kLong);
  g->ids = at::zeros({rows, 1}, options);
  g->positions = at::zeros({rows}, options);
  fill(*g);
  const c10::DeviceIndex index = impl_->device;
  at::accelerator::synchronizeDevice(index);
  at::Tensor warm;
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, index);
  {
    c10::cuda::CUDAStreamGuard guard(side);
    warm = impl_->decoder.DecodeOnDevice(g->ids, g->positions, 0, key_length,
                                         cache, graph_run);
    at::accelerator::synchronizeDevice(index);
    bool capturing = false;
    try {
      g->graph.capture_begin(impl_->pool, cudaStreamCaptureModeThreadLocal);
      capturing = true;
      g->hidden = impl_->decoder.DecodeOnDevice(g->ids, g->positions, 0,
                                                key_length, cache, graph_run);
      capturing = false;
      g->graph.capture_end();
    } catch (const std::exception& e) {
      MRL_LOG(WARNING) << "CUDA graph capture failed (" << e.what()
                       << "); decoding eagerly from now on";
      if (capturing) {
        // Leave capture mode and give the pool back, or every later
        // allocation on this stream and every emptyCache would fail.
        cudaGraph_t partial = nullptr;
        cudaStreamEndCapture(side.stream(), &partial);
        if (partial != nullptr) cudaGraphDestroy(partial);
        c10::cuda::CUDACachingAllocator::endAllocateToPool(index, impl_->pool);
        c10::cuda::CUDACachingAllocator::releasePool(index, impl_->pool);
      }
      (void)cudaGetLastError();
      impl_->broken = true;
    }
  }
  at::accelerator::synchronizeDevice(index);
  // The warm-up's result, copied on the engine's stream (its block belongs to
  // the side stream, which is idle now).
  const at::Tensor result = warm.narrow(0, 0, n).clone();
  warm = at::Tensor();
  if (!impl_->broken) impl_->graphs.emplace(key, std::move(g));
  return result;
}

}  // namespace microrl::rollout
