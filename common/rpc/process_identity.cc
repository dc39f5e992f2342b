#include "common/rpc/process_identity.h"

#include <unistd.h>

#include "absl/time/clock.h"
#include "common/base/version.h"

namespace microrl::rpc {

ProcessIdentity::ProcessIdentity(std::string component)
    : component_(std::move(component)), start_(absl::Now()) {}

void ProcessIdentity::Fill(v1::ProcessInfo* info) const {
  info->set_component(component_);
  info->set_version(Version());
  info->set_pid(getpid());
  info->set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - start_));
  info->set_metrics_port(metrics_port_.load());
}

}  // namespace microrl::rpc
