#include "common/model/kv_cache.h"

#include <ATen/ATen.h>

#include <exception>

#include "absl/strings/str_cat.h"

namespace microrl::model {

absl::StatusOr<KvCache> KvCache::Create(const ModelConfig& model,
                                        const KvCacheOptions& options) {
  if (options.num_slots <= 0 || options.capacity <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache needs slots and capacity, got ",
                     options.num_slots, " x ", options.capacity));
  }
  KvCache cache;
  cache.capacity_ = options.capacity;
  cache.lengths_.assign(options.num_slots, 0);
  try {
    const auto tensor_options =
        at::TensorOptions().device(options.device).dtype(options.dtype);
    for (int64_t layer = 0; layer < model.num_layers; ++layer) {
      cache.keys_.push_back(at::zeros({options.num_slots, model.num_kv_heads,
                                       options.capacity, model.head_dim},
                                      tensor_options));
      cache.values_.push_back(at::zeros_like(cache.keys_.back()));
    }
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the KV cache (", options.num_slots,
                     " slots x ", options.capacity, " tokens): ", e.what()));
  }
  return cache;
}

void KvCache::CopyPrefix(int64_t src, int64_t dst, int64_t length) {
  if (src != dst && length > 0) {
    for (size_t layer = 0; layer < keys_.size(); ++layer) {
      keys_[layer][dst]
          .narrow(1, 0, length)
          .copy_(keys_[layer][src].narrow(1, 0, length));
      values_[layer][dst]
          .narrow(1, 0, length)
          .copy_(values_[layer][src].narrow(1, 0, length));
    }
  }
  lengths_[dst] = length;
}

int64_t KvCache::bytes() const {
  int64_t total = 0;
  for (size_t layer = 0; layer < keys_.size(); ++layer) {
    total += keys_[layer].nbytes() + values_[layer].nbytes();
  }
  return total;
}

}  // namespace microrl::model
