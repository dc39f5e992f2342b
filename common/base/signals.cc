#include "common/base/signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace microrl {
namespace {

sigset_t TerminationSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);  // RequestTermination()
  return set;
}

}  // namespace

void BlockTerminationSignals() {
  const sigset_t set = TerminationSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void UnblockTerminationSignals() {
  const sigset_t set = TerminationSet();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  const sigset_t set = TerminationSet();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

int TakePendingTerminationSignal() {
  const sigset_t set = TerminationSet();
  const timespec now = {0, 0};
  while (true) {
    const int sig = sigtimedwait(&set, nullptr, &now);
    if (sig > 0) return sig;
    if (errno != EINTR) return 0;  // EAGAIN: none pending
  }
}

void RequestTermination() { kill(getpid(), SIGUSR1); }

bool IsTerminationRequest(int sig) { return sig == SIGUSR1; }

void ExitWithoutStaticDestructors(int code) {
  std::fflush(nullptr);
  std::_Exit(code);
}

}  // namespace microrl
