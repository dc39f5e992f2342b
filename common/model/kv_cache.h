#ifndef MICRORL_COMMON_MODEL_KV_CACHE_H_
#define MICRORL_COMMON_MODEL_KV_CACHE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/config.h"

namespace microrl::model {

struct KvCacheOptions {
  int64_t num_slots = 1;  // sequences that can be cached at once
  int64_t capacity = 0;   // tokens per slot (prompt + completion)
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
};

// Keys and values of every layer for a fixed set of sequence slots:
// per layer, keys and values of shape [num_slots, num_kv_heads, capacity,
// head_dim] (head-major: the keys of consecutive slots, narrowed to a length,
// are one strided batch of [length, head_dim] matrices per KV head, which
// attention multiplies without a copy). Each slot holds one sequence's first
// length(slot) positions; the decoder appends to it. Owned by whoever
// schedules sequences (the rollout engine), never by the model. Not
// thread-safe.
class KvCache {
 public:
  static absl::StatusOr<KvCache> Create(const ModelConfig& model,
                                        const KvCacheOptions& options);

  int64_t num_slots() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t capacity() const { return capacity_; }
  int64_t num_layers() const { return static_cast<int64_t>(keys_.size()); }

  // Tokens cached in `slot`.
  int64_t length(int64_t slot) const { return lengths_[slot]; }
  void set_length(int64_t slot, int64_t length) { lengths_[slot] = length; }

  // Per-layer storage, [num_slots, num_kv_heads, capacity, head_dim].
  at::Tensor& keys(int64_t layer) { return keys_[layer]; }
  at::Tensor& values(int64_t layer) { return values_[layer]; }

  // Makes slot `dst` hold the first `length` positions of slot `src` (e.g. one
  // prompt's KV shared by the G completions of its group).
  void CopyPrefix(int64_t src, int64_t dst, int64_t length);

  // Bytes held by all layers' keys and values.
  int64_t bytes() const;

 private:
  int64_t capacity_ = 0;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
  std::vector<int64_t> lengths_;
};

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_KV_CACHE_H_
