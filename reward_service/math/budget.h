#ifndef MICRORL_REWARD_SERVICE_MATH_BUDGET_H_
#define MICRORL_REWARD_SERVICE_MATH_BUDGET_H_

#include <cstdint>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

// How much work one comparison may do: a step count and a deadline. Running out
// throws (TooComplex or TimedOut), which CompareAnswers turns into a reason.
namespace microrl::reward::math {

struct TooComplex {
  std::string why;
};
struct TimedOut {};

class Budget {
 public:
  Budget(int64_t steps, absl::Time deadline)
      : steps_(steps), deadline_(deadline) {}
  void Step(int64_t n = 1) {
    steps_ -= n;
    if (steps_ < 0)
      throw TooComplex{"the answer needs too much work to compare"};
    if ((++ticks_ & 255) == 0 && absl::Now() > deadline_) throw TimedOut{};
  }

 private:
  int64_t steps_;
  absl::Time deadline_;
  int64_t ticks_ = 0;
};

}  // namespace microrl::reward::math

#endif  // MICRORL_REWARD_SERVICE_MATH_BUDGET_H_
