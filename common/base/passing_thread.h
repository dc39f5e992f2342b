#ifndef MICRORL_COMMON_BASE_PASSING_THREAD_H_
#define MICRORL_COMMON_BASE_PASSING_THREAD_H_

#include <exception>
#include <optional>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

namespace microrl {

// Runs `work` on a new thread, waits for it, and returns what it returns (or
// rethrows what it threw). Where no thread can be started, `work` runs on the
// calling thread.
//
// Why: LibTorch's CPU operators run on GNU OpenMP, which gives every thread
// that starts a parallel region a team of worker threads of its own, kept
// until that thread exits. Once a process holds more OpenMP threads than there
// are CPUs, every worker goes to sleep right after each parallel region
// instead of spinning, and each operator then pays for waking it: with the
// model loaded on the main thread and decoded on the engine's, a decode step
// of qwen2-100m on 2 CPUs took 142 instead of 101 ms, rms_norm alone 0.32
// instead of 0.08 ms a call (docs/rollout.md). So each process computes on one
// long-lived thread (the rollout engine's, the learner's training thread), and
// tensor work anywhere else that runs once or now and then (loading a model or
// an adapter) runs here, its team gone when it returns.
template <typename F>
std::invoke_result_t<F&> RunOnPassingThread(F&& work) {
  using Result = std::invoke_result_t<F&>;
  using Slot = std::conditional_t<std::is_void_v<Result>, bool, Result>;
  std::optional<Slot> result;
  std::exception_ptr error;
  auto run = [&] {
    try {
      if constexpr (std::is_void_v<Result>) {
        work();
        result.emplace(true);
      } else {
        result.emplace(work());
      }
    } catch (...) {
      error = std::current_exception();
    }
  };
  try {
    std::thread(run).join();
  } catch (const std::system_error&) {
    // No thread to be had (EAGAIN: a thread or memory limit): the work runs
    // here, slower afterwards (this thread keeps an OpenMP team) but done.
    if (!result.has_value() && !error) run();
  }
  if (error) std::rethrow_exception(error);
  if constexpr (!std::is_void_v<Result>) return *std::move(result);
}

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_PASSING_THREAD_H_
