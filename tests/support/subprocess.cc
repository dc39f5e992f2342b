#include "tests/support/subprocess.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace microrl::testing {
namespace {

ExitInfo Decode(int wait_status) {
  ExitInfo info;
  if (WIFEXITED(wait_status)) {
    info.exited = true;
    info.code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    info.signal = WTERMSIG(wait_status);
  }
  return info;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(
    const std::vector<std::string>& argv, const std::string& output_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  const int out = open(output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (out < 0) {
    return absl::InternalError(
        absl::StrCat("open ", output_path, ": ", strerror(errno)));
  }
  std::vector<char*> args;
  for (const std::string& arg : argv)
    args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    close(out);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(out, STDOUT_FILENO);
    dup2(out, STDERR_FILENO);
    close(out);
    execv(args[0], args.data());
    dprintf(STDERR_FILENO, "execv %s: %s\n", args[0], strerror(errno));
    _exit(127);
  }
  close(out);
  return std::unique_ptr<Subprocess>(new Subprocess(pid, output_path));
}

Subprocess::~Subprocess() {
  if (!exit_.has_value()) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
}

void Subprocess::Signal(int sig) {
  if (!exit_.has_value()) kill(pid_, sig);
}

std::optional<ExitInfo> Subprocess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!exit_.has_value()) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exit_ = Decode(status);
      break;
    }
    if (absl::Now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return exit_;
}

std::string Subprocess::Output() const {
  std::ifstream in(output_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<RunResult> RunToCompletion(const std::vector<std::string>& argv,
                                          const std::string& output_path,
                                          absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<Subprocess>> process =
      Subprocess::Start(argv, output_path);
  if (!process.ok()) return process.status();
  const std::optional<ExitInfo> exit = (*process)->Wait(timeout);
  if (!exit.has_value()) {
    return absl::DeadlineExceededError(absl::StrCat(
        argv[0], " still running after ", absl::FormatDuration(timeout)));
  }
  return RunResult{*exit, (*process)->Output()};
}

namespace {

// The directories MakeTempDir made in this process, removed when it exits
// after all its tests passed (kept for a look when one failed).
struct TempDirs {
  pid_t owner = getpid();
  std::vector<std::string> paths;
};

TempDirs& MadeTempDirs() {
  static TempDirs* const dirs = [] {
    auto* made = new TempDirs;
    std::atexit([] {
      const TempDirs& all = MadeTempDirs();
      // Not in a forked child (a death test's), and not after a failure.
      if (getpid() != all.owner ||
          ::testing::UnitTest::GetInstance()->Failed()) {
        return;
      }
      // (nftw, not std::filesystem: in these binaries remove_all resolved to
      // LibTorch's copy and crashed at exit.)
      for (const std::string& path : all.paths) {
        nftw(
            path.c_str(),
            [](const char* file, const struct stat*, int, struct FTW*) {
              remove(file);
              return 0;
            },
            16, FTW_DEPTH | FTW_PHYS);
      }
    });
    return made;
  }();
  return *dirs;
}

}  // namespace

std::string MakeTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  const ::testing::TestInfo* test =
      ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name =
      test != nullptr ? absl::StrCat(test->test_suite_name(), ".", test->name())
                      : "microrl";
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  std::string templ =
      absl::StrCat(base != nullptr ? base : "/tmp", "/", name, ".XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << templ << ": " << strerror(errno);
  } else {
    static std::mutex mutex;
    std::lock_guard<std::mutex> lock(mutex);
    MadeTempDirs().paths.push_back(templ);
  }
  return templ;
}

bool WaitForFile(const std::string& path, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  struct stat st;
  while (stat(path.c_str(), &st) != 0) {
    if (absl::Now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

namespace {

// Binds a TCP socket to 127.0.0.1:0; returns the fd and sets *port.
int BindLoopback(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  *port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    *port = ntohs(addr.sin_port);
  }
  return fd;
}

}  // namespace

int PickFreePort() {
  int port = 0;
  close(BindLoopback(&port));
  return port;
}

ClosedPort::ClosedPort() { fd_ = BindLoopback(&port_); }

ClosedPort::~ClosedPort() { close(fd_); }

}  // namespace microrl::testing
