#ifndef MICRORL_TESTS_SUPPORT_DECODER_STEP_H_
#define MICRORL_TESTS_SUPPORT_DECODER_STEP_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/decoder.h"
#include "common/model/kv_cache.h"

namespace microrl::testing {

// What tests and the model bench need of a decoder beyond its production API.
class DecoderTestPeer {
 public:
  // A general cached forward: appends ids [N, T] to cache slots `slots` (row
  // n: its first new_tokens[n] ids are real, the rest padding) at positions
  // cache.length(slot) onwards, advances each slot's length by new_tokens[n],
  // and returns the hidden states [N, T, hidden]. Inference only.
  // ResourceExhausted if a slot would overflow the cache's capacity. (The
  // rollout server generates with PrefillAt and DecodeOnDevice; this is the
  // reference they are tested against.)
  static absl::StatusOr<at::Tensor> Step(const model::Decoder& decoder,
                                         const at::Tensor& ids,
                                         const std::vector<int64_t>& slots,
                                         const std::vector<int64_t>& new_tokens,
                                         model::KvCache& cache,
                                         const model::RunOptions& run);
};

}  // namespace microrl::testing

#endif  // MICRORL_TESTS_SUPPORT_DECODER_STEP_H_
