#include "common/metrics/process_collector.h"

#include <sys/resource.h>
#include <unistd.h>

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

// Fields of /proc/self/stat we report. Zero where unreadable.
struct ProcStat {
  double threads = 0;
  double virtual_bytes = 0;
  double resident_bytes = 0;
};

ProcStat ReadProcStat() {
  ProcStat stat;
  std::ifstream in("/proc/self/stat");
  std::string text;
  if (!std::getline(in, text)) return stat;
  // The command name (field 2) may contain spaces and ')'; fields resume after
  // the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return stat;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  // After ')' come fields 3 (state) onwards: num_threads is field 20, vsize 23,
  // rss 24.
  for (int index = 3; index <= 24 && (fields >> field); ++index) {
    if (index == 20) stat.threads = std::stod(field);
    if (index == 23) stat.virtual_bytes = std::stod(field);
    if (index == 24)
      stat.resident_bytes = std::stod(field) * sysconf(_SC_PAGESIZE);
  }
  return stat;
}

// When the kernel started this process, seconds since the Unix epoch: field 22
// of /proc/self/stat (clock ticks after boot) plus the boot time from
// /proc/stat. Now, if either is unreadable.
double ProcessStartTimeSeconds() {
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  std::ifstream stat_file("/proc/self/stat");
  std::string text;
  if (!std::getline(stat_file, text)) return now;
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return now;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  double start_ticks = -1;
  for (int index = 3; index <= 22 && (fields >> field); ++index) {
    if (index == 22) start_ticks = std::stod(field);
  }
  std::ifstream proc_stat("/proc/stat");
  std::string key;
  double boot_time = -1;
  while (proc_stat >> key) {
    if (key == "btime") {
      proc_stat >> boot_time;
      break;
    }
  }
  if (start_ticks < 0 || boot_time < 0) return now;
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
  const ProcStat stat = ReadProcStat();
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
             stat.resident_bytes),
      Family("microrl_process_virtual_memory_bytes",
             "Virtual memory size in bytes.", MetricType::Gauge,
             stat.virtual_bytes),
      Family("microrl_process_cpu_seconds_total",
             "User and system CPU time, seconds.", MetricType::Counter,
             cpu_seconds),
      Family("microrl_process_threads", "Number of OS threads.",
             MetricType::Gauge, stat.threads),
  };
}

}  // namespace microrl::metrics
