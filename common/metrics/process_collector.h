#ifndef MICRORL_COMMON_METRICS_PROCESS_COLLECTOR_H_
#define MICRORL_COMMON_METRICS_PROCESS_COLLECTOR_H_

#include <string>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace microrl::metrics {

// Process-level metrics, read from /proc and getrusage at scrape time:
//   microrl_build_info{component, version}   gauge, always 1
//   microrl_process_start_time_seconds       gauge, Unix time the process began
//   microrl_process_resident_memory_bytes    gauge
//   microrl_process_virtual_memory_bytes     gauge
//   microrl_process_cpu_seconds_total        counter, user + system
//   microrl_process_threads                  gauge
// Thread-safe: Collect() only reads the kernel's view of the process.
class ProcessCollector : public prometheus::Collectable {
 public:
  explicit ProcessCollector(std::string component);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string component_;
  const double start_time_seconds_;
};

}  // namespace microrl::metrics

#endif  // MICRORL_COMMON_METRICS_PROCESS_COLLECTOR_H_
