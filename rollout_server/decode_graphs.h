#ifndef MICRORL_ROLLOUT_SERVER_DECODE_GRAPHS_H_
#define MICRORL_ROLLOUT_SERVER_DECODE_GRAPHS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

#include "common/model/decoder.h"
#include "common/model/kv_cache.h"
#include "common/model/lora.h"

namespace microrl::rollout {

// Decode steps replayed from CUDA graphs: one graph per (rows rounded up to a
// power of two, key length, with or without the adapter), captured on first
// use, so a step is one launch instead of a few thousand. Rows beyond the real
// ones are padding: they read token 0 at position 0 and write that position of
// the slots after the running ones, which hold no sequence during a decode
// step. The graphs bake in the addresses of the KV cache and of the adapter's
// weights: they run a private copy of the adapter (SetAdapter copies a new
// adapter of the same shape into it, so the graphs survive a swap), and Clear()
// must follow any change of the cache's tensors. A capture that fails turns
// the graphs off (every step then runs eagerly). CUDA only; used by the engine
// thread alone.
class DecodeGraphs {
 public:
  // `max_rows`: the number of cache slots (no bucket exceeds it).
  DecodeGraphs(const model::Decoder& decoder, int64_t max_rows);
  ~DecodeGraphs();
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  // Decoder::DecodeOnDevice(ids [n, 1], positions [n], first_slot 0,
  // key_length, cache, run) through a graph (run.adapter, if any, must be the
  // one last given to SetAdapter); returns [n, 1, hidden], valid until the
  // next Run.
  at::Tensor Run(const at::Tensor& ids, const at::Tensor& positions,
                 int64_t key_length, model::KvCache& cache,
                 const model::RunOptions& run);

  // The adapter of the graphs from now on: its weights are copied into the
  // private copy when the shapes, dtypes and scales match (graphs kept), else
  // the copy is remade and the graphs that use it are dropped.
  void SetAdapter(const model::LoraAdapter& adapter);

  // Drops every graph (and the memory they hold).
  void Clear();
  int64_t size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_DECODE_GRAPHS_H_
