#include "rollout_server/prompt_slots.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "common/model/tensor_io.h"

namespace microrl::rollout {

std::optional<PromptSlots::Place> PromptSlots::Reserve(int64_t length,
                                                       int64_t capacity,
                                                       int64_t needed,
                                                       int64_t* free) {
  const int64_t room = capacity - 1;  // a prompt slot's last: padding
  if (length > room) return std::nullopt;
  int index = -1;
  for (size_t i = 0; i < slots_.size() && index < 0; ++i) {
    if (slots_[i].fill + length <= room) index = static_cast<int>(i);
  }
  if (index < 0 && *free >= needed + 1) {
    slots_.emplace_back();
    index = static_cast<int>(slots_.size()) - 1;
    --*free;
  }
  if (index < 0) return std::nullopt;
  const Place place = {index, slots_[index].fill};
  slots_[index].fill += length;
  return place;
}

void PromptSlots::Release(model::KvCache& cache,
                          const std::function<void(int from, int to)>& moved) {
  // From the last, so the slot moved into a freed one is never free itself.
  for (int i = static_cast<int>(slots_.size()) - 1; i >= 0; --i) {
    if (slots_[i].live > 0) continue;
    const int last = static_cast<int>(slots_.size()) - 1;
    if (i != last) {
      cache.CopyPrefix(KvSlot(last), KvSlot(i), slots_[last].fill);
      slots_[i] = slots_[last];
      moved(last, i);
    }
    slots_.pop_back();
  }
}

int64_t PromptSlots::used_tokens() const {
  int64_t used = 0;
  for (const Slot& slot : slots_) used += slot.fill;
  return used;
}

std::optional<model::SharedPrompts> PromptSlots::View(
    const std::vector<Reader>& rows, int64_t key_bucket, int64_t capacity,
    at::Device device, at::Tensor* rotary_offsets) const {
  if (slots_.empty()) return std::nullopt;
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t slots = count();
  // View index v is prompt slot count - 1 - v (KV slot num_slots - slots + v).
  std::vector<std::vector<int64_t>> readers(slots);
  std::vector<int64_t> offsets(n, 0);
  bool any_own = false;  // rows whose prompt is in their own slot
  for (int64_t i = 0; i < n; ++i) {
    if (rows[i].index < 0) {
      any_own = true;
      continue;
    }
    readers[slots - 1 - rows[i].index].push_back(i);
    offsets[i] = rows[i].length;
  }
  size_t width = 1;
  for (const auto& list : readers) width = std::max(width, list.size());
  // Those rows all point at one extra entry that reads no prompt key (its
  // probabilities are zeros, so their writes there agree).
  if (any_own) ++width;
  const int64_t w = static_cast<int64_t>(width);
  std::vector<int64_t> row_of(slots * w, 0);
  std::vector<int64_t> from(slots * w, 0);
  std::vector<int64_t> to(slots * w, 0);
  std::vector<int64_t> entry(n, w - 1);
  for (int64_t v = 0; v < slots; ++v) {
    for (size_t j = 0; j < readers[v].size(); ++j) {
      const int64_t i = readers[v][j];
      const int64_t e = v * w + static_cast<int64_t>(j);
      row_of[e] = i;
      entry[i] = e;
      from[e] = rows[i].offset;
      to[e] = rows[i].offset + rows[i].length;
    }
  }
  int64_t fill = 1;
  for (const Slot& slot : slots_) fill = std::max(fill, slot.fill);
  model::SharedPrompts shared;
  shared.first_slot = num_slots_ - slots;
  shared.key_length = std::min<int64_t>(
      capacity, (fill + key_bucket - 1) / key_bucket * key_bucket);
  shared.rows = model::HostToDevice(row_of, at::kLong, device).view({slots, w});
  shared.entry = model::HostToDevice(entry, at::kLong, device);
  shared.starts = model::HostToDevice(from, at::kLong, device).view({slots, w});
  shared.ends = model::HostToDevice(to, at::kLong, device).view({slots, w});
  *rotary_offsets = model::HostToDevice(offsets, at::kLong, device);
  return shared;
}

}  // namespace microrl::rollout
