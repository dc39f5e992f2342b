#ifndef MICRORL_LEARNER_RUN_LOCK_H_
#define MICRORL_LEARNER_RUN_LOCK_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace microrl::learner {

// An exclusive lock on a run directory (flock on <dir>/learner.lock, which
// holds the owner's pid), so two learners never train into one run. Held for
// the object's lifetime; the kernel releases it when the process dies, so a
// SIGKILLed learner leaves no stale lock. Not thread-safe (one per process).
class RunLock {
 public:
  // FailedPrecondition naming the directory and the holder's pid when another
  // process holds it; Internal if the lock file cannot be opened.
  static absl::StatusOr<std::unique_ptr<RunLock>> Acquire(
      const std::string& run_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  explicit RunLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_RUN_LOCK_H_
