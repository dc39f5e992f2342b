#ifndef MICRORL_ROLLOUT_SERVER_PROMPT_SLOTS_H_
#define MICRORL_ROLLOUT_SERVER_PROMPT_SLOTS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "common/model/decoder.h"
#include "common/model/kv_cache.h"

namespace microrl::rollout {

// --share_prompt_kv: KV slots holding the prompts of groups, each read by all
// of its group's completions, which keep only their own tokens in their slots.
// A prompt slot holds several prompts; prompt slot i is KV slot
// num_slots - 1 - i (they fill the cache's last slots downwards) and counts
// against the slot budget only while one of its prompts is read. All of the
// engine's prompt sharing is here and in the engine's few calls to it.
class PromptSlots {
 public:
  explicit PromptSlots(int64_t num_slots) : num_slots_(num_slots) {}

  int64_t count() const { return static_cast<int64_t>(slots_.size()); }
  int64_t KvSlot(int index) const { return num_slots_ - 1 - index; }

  // Where a prompt goes in a KV cache of `capacity` positions per slot.
  struct Place {
    int index = 0;       // the prompt slot
    int64_t offset = 0;  // its first position there
  };
  // A place for a prompt of `length` tokens: in a prompt slot with room, or in
  // a new one if `*free` KV slots leave one beyond the `needed` ones (then
  // *free goes down by one); nullopt if neither.
  std::optional<Place> Reserve(int64_t length, int64_t capacity, int64_t needed,
                               int64_t* free);
  void AddReaders(int index, int64_t count) { slots_[index].live += count; }
  void RemoveReader(int index) { --slots_[index].live; }

  // Frees the prompt slots nobody reads, keeping the rest in the last KV
  // slots: the last one moves into a freed one, and `moved(from, to)` lets its
  // readers follow.
  void Release(model::KvCache& cache,
               const std::function<void(int from, int to)>& moved);
  void Clear() { slots_.clear(); }
  // Positions given out, over all prompt slots.
  int64_t used_tokens() const;

  // A decode row: the prompt slot it reads its prompt from (-1: its own slot)
  // and where.
  struct Reader {
    int index = -1;
    int64_t offset = 0;
    int64_t length = 0;
  };
  // Which rows read which prompt slot (nullopt without prompt slots), key
  // lengths rounded up to `key_bucket`; each row's RoPE offset (its prompt's
  // length if it reads a prompt slot, else 0) goes to `rotary_offsets`.
  std::optional<model::SharedPrompts> View(const std::vector<Reader>& rows,
                                           int64_t key_bucket, int64_t capacity,
                                           at::Device device,
                                           at::Tensor* rotary_offsets) const;

 private:
  struct Slot {
    int64_t fill = 0;  // positions given out (never the slot's last one)
    int64_t live = 0;  // running sequences reading it
  };
  const int64_t num_slots_;
  std::vector<Slot> slots_;
};

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_PROMPT_SLOTS_H_
