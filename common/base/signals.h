#ifndef MICRORL_COMMON_BASE_SIGNALS_H_
#define MICRORL_COMMON_BASE_SIGNALS_H_

namespace microrl {

// Termination by SIGINT/SIGTERM, handled synchronously:
// BlockTerminationSignals() at the top of main (before any thread starts, so
// every thread inherits the blocked mask), then WaitForTerminationSignal()
// where the program is ready to stop. No async signal handler runs, so shutdown
// code may lock, allocate and log freely.

// Blocks SIGINT and SIGTERM (and SIGUSR1, which RequestTermination sends) in
// the calling thread and in threads it creates afterwards.
void BlockTerminationSignals();

// Undoes BlockTerminationSignals in the calling thread: before exec'ing another
// program, which would inherit the blocked mask and never see SIGTERM.
void UnblockTerminationSignals();

// Blocks the caller until SIGINT, SIGTERM or RequestTermination()'s signal
// arrives; returns the signal number.
int WaitForTerminationSignal();

// For a loop that stops between units of work (a training step): takes a
// pending SIGINT, SIGTERM or RequestTermination() signal without waiting and
// returns its number, or 0 when none is pending. The signals must be blocked
// (BlockTerminationSignals) in every thread, or the kernel delivers them
// elsewhere.
int TakePendingTerminationSignal();

// Signals this process (SIGUSR1) to stop: a thread that has finished the
// program's work (e.g. a training run) makes the waiting main thread stop
// cleanly. Unlike a second SIGTERM, a request during a stop is harmless.
void RequestTermination();
// Whether `sig` (from WaitForTerminationSignal) came from RequestTermination.
bool IsTerminationRequest(int sig);

// Ends the process with `code` after flushing stdio, without running static
// destructors. For a service main after a clean stop: LibTorch's static
// destructors alone take ~0.3 s and release nothing the kernel does not.
[[noreturn]] void ExitWithoutStaticDestructors(int code);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_SIGNALS_H_
