#ifndef MICRORL_LEARNER_TRAINING_STATUS_H_
#define MICRORL_LEARNER_TRAINING_STATUS_H_

#include <cstdint>
#include <mutex>
#include <string>

#include "proto/learner.pb.h"

namespace microrl::learner {

// Where a training run stands, written by the trainer and read by GetInfo.
// Thread-safe.
class TrainingStatus {
 public:
  struct View {
    v1::LearnerState state = v1::LEARNER_STATE_IDLE;
    std::string run_name;
    int64_t step = 0;
    int64_t total_steps = 0;
    uint64_t adapter_version = 0;
    std::string error;
  };

  View Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return view_;
  }
  template <typename F>
  void Update(F&& change) {
    std::lock_guard<std::mutex> lock(mu_);
    change(view_);
  }

 private:
  mutable std::mutex mu_;
  View view_;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_TRAINING_STATUS_H_
