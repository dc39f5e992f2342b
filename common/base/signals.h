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

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_SIGNALS_H_
