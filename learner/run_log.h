#ifndef MICRORL_LEARNER_RUN_LOG_H_
#define MICRORL_LEARNER_RUN_LOG_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/device/device.h"
#include "nlohmann/json.hpp"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace microrl::learner {

// One training step's measurements, in the order they are logged.
using StepMetrics = nlohmann::ordered_json;

// What a run tells about itself: <run>/metrics.jsonl (one line per step and
// per evaluation), a gauge microrl_train_<key> per numeric metric, and a
// progress line per step on stdout.
class RunLog {
 public:
  RunLog(std::string run_dir, prometheus::Registry& registry);

  // Keeps the lines of steps up to `step` (those a resumed checkpoint holds)
  // and drops the rest, a torn last line included.
  absl::Status KeepUpTo(int64_t step);

  // Appends one line in one write; a failed one (a full disk) leaves no torn
  // line.
  absl::Status Append(const StepMetrics& line);

  // Sets the gauges of the step's numeric metrics, appends its line and
  // prints the progress line (step of max_steps, ETA from `elapsed_seconds`
  // of training so far).
  absl::Status LogStep(const StepMetrics& metrics, int64_t step,
                       int64_t max_steps, double elapsed_seconds,
                       absl::Duration step_time);

  // The periodic validation's line (val_pass@1, val_mean_length,
  // val_seconds), gauge and progress line.
  absl::Status LogValidation(int64_t step, double pass_at_1, double mean_length,
                             int64_t problems, double seconds);

  void SetGauge(const std::string& key, double value);

  // Makes the lines written so far durable.
  absl::Status Sync();

 private:
  const std::string path_;
  prometheus::Registry& registry_;
  std::map<std::string, prometheus::Gauge*> gauges_;
};

// Seconds a step spent in each phase.
struct StepTimes {
  double generate = 0;
  double score = 0;
  double update = 0;
  double publish = 0;
  double step = 0;  // all of it
};

// time/<phase>, and the throughputs: tokens generated per second of
// generation, tokens trained per second of update.
void AddTimeMetrics(const StepTimes& times, int64_t generated_tokens,
                    double trained_tokens, StepMetrics& metrics);

// The device's memory now and at its peak since the last reset (the step's
// update), added to `metrics` as gpu_memory_*_bytes.
void AddMemoryMetrics(const device::Device& device, StepMetrics& metrics);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_RUN_LOG_H_
