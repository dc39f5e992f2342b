#include "common/metrics/process_collector.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/base/version.h"

namespace microrl::metrics {
namespace {

prometheus::MetricFamily Family(
    std::string name, std::string help, prometheus::MetricType type,
    double value, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  return prometheus::MetricFamily{
      std::move(name), std::move(help), type, {metric}};
}

// Numeric field `n` (1-based, as in proc(5)) of /proc/self/stat for each n in
// `wanted`, in that order; -1 for a field that cannot be read.
std::vector<double> ProcSelfStat(const std::vector<int>& wanted) {
  std::vector<double> values(wanted.size(), -1);
  std::ifstream in("/proc/self/stat");
  std::string text;
  if (!std::getline(in, text)) return values;
  // The command name (field 2) may contain spaces and ')'; field 3 starts after
  // the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return values;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  for (int index = 3; fields >> field; ++index) {
    for (size_t i = 0; i < wanted.size(); ++i) {
      if (wanted[i] == index) values[i] = std::strtod(field.c_str(), nullptr);
    }
  }
  return values;
}

// When the kernel started this process, seconds since the Unix epoch: field 22
// of /proc/self/stat (clock ticks after boot) plus the boot time from
// /proc/stat. Now, if either is unreadable.
double ProcessStartTimeSeconds() {
  const double start_ticks = ProcSelfStat({22})[0];
  std::ifstream proc_stat("/proc/stat");
  std::string key;
  double boot_time = -1;
  while (proc_stat >> key) {
    if (key == "btime") {
      proc_stat >> boot_time;
      break;
    }
  }
  if (start_ticks < 0 || boot_time < 0) {
    return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  }
  return boot_time + start_ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

ProcessCollector::ProcessCollector(std::string component)
    : component_(std::move(component)),
      start_time_seconds_(ProcessStartTimeSeconds()) {}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double cpu_seconds =
      usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 +
      usage.ru_stime.tv_sec + usage.ru_stime.tv_usec * 1e-6;
  // num_threads, vsize (bytes) and rss (pages): fields 20, 23 and 24.
  const std::vector<double> stat = ProcSelfStat({20, 23, 24});
  const double threads = std::max(stat[0], 0.0);
  const double virtual_bytes = std::max(stat[1], 0.0);
  const double resident_bytes =
      std::max(stat[2], 0.0) * static_cast<double>(sysconf(_SC_PAGESIZE));
  using prometheus::MetricType;
  return {
      Family("microrl_build_info",
             "microrl build of this process (value is always 1).",
             MetricType::Gauge, 1.0,
             {{"component", component_}, {"version", Version()}}),
      Family("microrl_process_start_time_seconds",
             "Start time of the process, seconds since the Unix epoch.",
             MetricType::Gauge, start_time_seconds_),
      Family("microrl_process_resident_memory_bytes",
             "Resident memory size in bytes.", MetricType::Gauge,
             resident_bytes),
      Family("microrl_process_virtual_memory_bytes",
             "Virtual memory size in bytes.", MetricType::Gauge, virtual_bytes),
      Family("microrl_process_cpu_seconds_total",
             "User and system CPU time, seconds.", MetricType::Counter,
             cpu_seconds),
      Family("microrl_process_threads", "Number of OS threads.",
             MetricType::Gauge, threads),
  };
}

}  // namespace microrl::metrics
