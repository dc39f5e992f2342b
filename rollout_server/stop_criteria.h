#ifndef MICRORL_ROLLOUT_SERVER_STOP_CRITERIA_H_
#define MICRORL_ROLLOUT_SERVER_STOP_CRITERIA_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace microrl::rollout {

// When a completion stops before its length limit: on a stop token (the
// request's stop_token_ids and, unless it ignores EOS, the model's EOS ids), or
// on a stop string appearing in its decoded text. Pure: it reads ids and text
// and keeps no state of its own across calls.
class StopCriteria {
 public:
  StopCriteria() = default;
  StopCriteria(std::vector<int32_t> stop_token_ids,
               std::vector<std::string> stop_strings);

  bool IsStopToken(int32_t id) const;

  // A stop string found in `text`, whose first `checked` bytes were searched
  // before: the match ending in the new bytes that starts first (of those, the
  // first listed).
  struct Match {
    size_t position = 0;      // where it starts in `text`
    const std::string* stop;  // which one
  };
  std::optional<Match> FindStopString(const std::string& text,
                                      size_t checked) const;

  bool has_stop_strings() const { return longest_ > 0; }

 private:
  std::vector<int32_t> stop_ids_;  // sorted
  std::vector<std::string> stop_strings_;
  size_t longest_ = 0;  // bytes of the longest stop string
};

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_STOP_CRITERIA_H_
