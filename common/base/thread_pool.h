#ifndef MICRORL_COMMON_BASE_THREAD_POOL_H_
#define MICRORL_COMMON_BASE_THREAD_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace microrl {

// A fixed set of worker threads. ParallelFor spreads a loop over them; the
// calling thread helps. Thread-safe: several callers may share one pool.
class ThreadPool {
 public:
  // `threads` workers; 0 means one per hardware thread.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size(); }

  // Calls fn(i) for every i in [0, n), on the workers and the caller, and
  // returns when all calls have returned. fn must not throw.
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn);

  // Queues fn to run on a worker and returns at once: a pool of one thread
  // runs what is posted in order. The destructor runs what is queued first.
  void Post(std::function<void()> fn);

 private:
  void Work();

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_THREAD_POOL_H_
