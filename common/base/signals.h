#ifndef MICRORL_COMMON_BASE_SIGNALS_H_
#define MICRORL_COMMON_BASE_SIGNALS_H_

namespace microrl {

// Termination by SIGINT/SIGTERM, handled synchronously:
// BlockTerminationSignals() at the top of main (before any thread starts, so
// every thread inherits the blocked mask), then WaitForTerminationSignal()
// where the program is ready to stop. No async signal handler runs, so shutdown
// code may lock, allocate and log freely.

// Blocks SIGINT and SIGTERM in the calling thread and in threads it creates
// afterwards.
void BlockTerminationSignals();

// Blocks the caller until SIGINT or SIGTERM arrives; returns the signal number.
int WaitForTerminationSignal();

// Ends the process with `code` after flushing stdio, without running static
// destructors. For a service main after a clean stop: LibTorch's static
// destructors alone take ~0.3 s and release nothing the kernel does not.
[[noreturn]] void ExitWithoutStaticDestructors(int code);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_SIGNALS_H_
