#include "common/base/failpoint.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/logging.h"

namespace microrl {
namespace {

struct Point {
  bool kill = false;
  int64_t nth = 0;      // 0: every time
  bool onward = false;  // from the nth time on
  int64_t hits = 0;
};

absl::Status Parse(const std::string& spec, std::map<std::string, Point>* out) {
  for (absl::string_view entry : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    const std::vector<std::string> parts = absl::StrSplit(entry, '=');
    Point point;
    std::string action = parts.size() == 2 ? parts[1] : "";
    if (const size_t at = action.find('@'); at != std::string::npos) {
      std::string count = action.substr(at + 1);
      if (!count.empty() && count.back() == '+') {
        point.onward = true;
        count.pop_back();
      }
      if (!absl::SimpleAtoi(count, &point.nth) || point.nth < 1) {
        action.clear();
      } else {
        action.resize(at);
      }
    }
    if (parts.size() != 2 || parts[0].empty() ||
        (action != "error" && action != "kill")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MICRORL_FAILPOINTS: bad entry \"", entry,
          "\" (expected name=error|kill, optionally @N or @N+ with N >= 1)"));
    }
    point.kill = action == "kill";
    if (out != nullptr) (*out)[parts[0]] = point;
  }
  return absl::OkStatus();
}

struct Registry {
  std::mutex mu;
  std::map<std::string, Point> points;  // guarded by mu
  std::atomic<bool> any{false};
};

Registry& Points() {
  static Registry* registry = [] {
    auto* r = new Registry;
    const char* spec = std::getenv("MICRORL_FAILPOINTS");
    if (spec != nullptr && *spec != '\0') {
      if (absl::Status s = Parse(spec, &r->points); !s.ok()) {
        MRL_LOG(ERROR) << s << "; no failpoint is active";
        r->points.clear();
      }
      r->any = !r->points.empty();
    }
    return r;
  }();
  return *registry;
}

}  // namespace

absl::Status Failpoint(absl::string_view name, absl::StatusCode error) {
  Registry& registry = Points();
  if (!registry.any.load(std::memory_order_relaxed)) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(registry.mu);
  auto it = registry.points.find(std::string(name));
  if (it == registry.points.end()) return absl::OkStatus();
  Point& point = it->second;
  ++point.hits;
  if (point.nth != 0 &&
      (point.onward ? point.hits < point.nth : point.hits != point.nth)) {
    return absl::OkStatus();
  }
  if (point.kill) {
    MRL_LOG(WARNING) << "failpoint " << name << ": killing the process (hit "
                     << point.hits << ")";
    kill(getpid(), SIGKILL);
    pause();
  }
  MRL_LOG(WARNING) << "failpoint " << name << ": injecting an error (hit "
                   << point.hits << ")";
  return absl::Status(error,
                      absl::StrCat("failpoint ", name, ": injected failure"));
}

absl::Status CheckFailpointSpec(const std::string& spec) {
  return Parse(spec, nullptr);
}

}  // namespace microrl
