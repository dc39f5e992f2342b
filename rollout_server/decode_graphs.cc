#include "rollout_server/decode_graphs.h"

#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <map>
#include <tuple>

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
  at::cuda::MempoolId_t pool = at::cuda::graph_pool_handle();
  // (rows, key length, adapter in use)
  std::map<std::tuple<int64_t, int64_t, bool>, std::unique_ptr<Graph>> graphs;
};

DecodeGraphs::DecodeGraphs(const model::Decoder& decoder, int64_t max_rows)
    : impl_(new Impl{decoder, max_rows}) {}

DecodeGraphs::~DecodeGraphs() = default;

void DecodeGraphs::Clear() { impl_->graphs.clear(); }

int64_t DecodeGraphs::size() const {
  return static_cast<int64_t>(impl_->graphs.size());
}

at::Tensor DecodeGraphs::Run(const at::Tensor& ids, const at::Tensor& positions,
                             int64_t key_length, model::KvCache& cache,
                             const model::RunOptions& run) {
  c10::InferenceMode inference;
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
  const c10::DeviceIndex index = ids.device().index();
  at::accelerator::synchronizeDevice(index);
  at::Tensor result;
  {
    c10::cuda::CUDAStreamGuard guard(
        c10::cuda::getStreamFromPool(false, index));
    result =
        impl_->decoder
            .DecodeOnDevice(g->ids, g->positions, 0, key_length, cache, run)
            .clone();
    at::accelerator::synchronizeDevice(index);
    g->graph.capture_begin(impl_->pool, cudaStreamCaptureModeThreadLocal);
    g->hidden = impl_->decoder.DecodeOnDevice(g->ids, g->positions, 0,
                                              key_length, cache, run);
    g->graph.capture_end();
  }
  at::accelerator::synchronizeDevice(index);
  impl_->graphs.emplace(key, std::move(g));
  return result.narrow(0, 0, n);
}

}  // namespace microrl::rollout
