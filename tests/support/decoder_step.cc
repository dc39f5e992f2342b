#include "tests/support/decoder_step.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"
#include "common/model/tensor_io.h"

namespace microrl::testing {

absl::StatusOr<at::Tensor> DecoderTestPeer::Step(
    const model::Decoder& decoder, const at::Tensor& ids,
    const std::vector<int64_t>& slots, const std::vector<int64_t>& new_tokens,
    model::KvCache& cache, const model::RunOptions& run) {
  if (absl::Status ok = model::Decoder::CheckIds(ids, "Step"); !ok.ok()) {
    return ok;
  }
  const int64_t rows = ids.size(0);
  const int64_t steps = ids.size(1);
  if (static_cast<int64_t>(slots.size()) != rows ||
      static_cast<int64_t>(new_tokens.size()) != rows) {
    return absl::InvalidArgumentError(
        "Step: need one slot and one token count per row");
  }
  std::vector<int64_t> starts(rows);
  int64_t key_length = 0;
  bool fresh = true;  // every row starts an empty slot: plain causal attention
  bool consecutive = true;
  for (int64_t n = 0; n < rows; ++n) {
    if (slots[n] < 0 || slots[n] >= cache.num_slots()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Step: no slot ", slots[n]));
    }
    if (new_tokens[n] < 0 || new_tokens[n] > steps) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Step: row ", n, " has ", new_tokens[n], " new tokens of ", steps));
    }
    starts[n] = cache.length(slots[n]);
    if (starts[n] + steps > cache.capacity()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "slot ", slots[n], " holds ", starts[n], " tokens; ", steps,
          " more exceed its capacity of ", cache.capacity()));
    }
    key_length = std::max(key_length, starts[n] + steps);
    fresh = fresh && starts[n] == 0;
    consecutive = consecutive && slots[n] == slots[0] + n;
  }
  absl::StatusOr<at::Tensor> result = [&]() -> absl::StatusOr<at::Tensor> {
    try {
      c10::InferenceMode inference;
      const at::Tensor on_device = ids.to(decoder.options_.device);
      const auto long_options =
          at::TensorOptions().dtype(at::kLong).device(decoder.options_.device);
      const at::Tensor start =
          model::HostToDevice(starts, at::kLong, decoder.options_.device);
      const at::Tensor positions =
          start.unsqueeze(1) +
          at::arange(steps, long_options).unsqueeze(0);  // [N, T]
      model::Decoder::CacheView view;
      view.cache = &cache;
      view.slots =
          model::HostToDevice(slots, at::kLong, decoder.options_.device);
      view.slot_index = view.slots.unsqueeze(1).expand({rows, steps});
      view.positions = positions;
      view.first_slot = consecutive ? slots[0] : -1;
      view.key_length = key_length;
      if (!fresh) {
        view.mask =
            (at::arange(key_length, long_options).view({1, 1, 1, key_length}) >
             positions.view({rows, 1, steps, 1}));
      }
      return decoder.RunCached(on_device, positions, view, run);
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("Step: ", e.what()));
    }
  }();
  if (result.ok()) {
    for (int64_t n = 0; n < rows; ++n)
      cache.set_length(slots[n], starts[n] + new_tokens[n]);
  }
  return result;
}

}  // namespace microrl::testing
