#include "rollout_server/stop_criteria.h"

#include <algorithm>
#include <utility>

namespace microrl::rollout {

StopCriteria::StopCriteria(std::vector<int32_t> stop_token_ids,
                           std::vector<std::string> stop_strings)
    : stop_ids_(std::move(stop_token_ids)),
      stop_strings_(std::move(stop_strings)) {
  std::sort(stop_ids_.begin(), stop_ids_.end());
  for (const std::string& stop : stop_strings_) {
    longest_ = std::max(longest_, stop.size());
  }
}

bool StopCriteria::IsStopToken(int32_t id) const {
  return std::binary_search(stop_ids_.begin(), stop_ids_.end(), id);
}

std::optional<StopCriteria::Match> StopCriteria::FindStopString(
    const std::string& text, size_t checked) const {
  if (longest_ == 0) return std::nullopt;
  // A match must end in the new bytes, so it starts at most longest - 1 bytes
  // before them.
  const size_t from = checked >= longest_ - 1 ? checked - (longest_ - 1) : 0;
  std::optional<Match> best;
  for (const std::string& stop : stop_strings_) {
    const size_t at = text.find(stop, from);
    if (at != std::string::npos && (!best.has_value() || at < best->position)) {
      best = Match{at, &stop};
    }
  }
  return best;
}

}  // namespace microrl::rollout
