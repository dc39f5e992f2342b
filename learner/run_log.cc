#include "learner/run_log.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/str_format.h"
#include "common/base/file.h"

namespace microrl::learner {
namespace {

std::string MetricName(const std::string& key) {
  std::string name = "microrl_train_";
  for (char c : key)
    name.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  return name;
}

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

}  // namespace

RunLog::RunLog(std::string run_dir, prometheus::Registry& registry)
    : path_(std::move(run_dir) + "/metrics.jsonl"), registry_(registry) {}

absl::Status RunLog::KeepUpTo(int64_t step) {
  if (!std::filesystem::exists(path_)) return absl::OkStatus();
  std::ifstream in(path_);
  std::string kept;
  std::string line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step) {
        kept += line + "\n";
      }
    } catch (const nlohmann::json::exception&) {
      // A torn last line from a crash: dropped.
    }
  }
  return WriteFileAtomically(path_, kept);
}

absl::Status RunLog::Append(const StepMetrics& line) {
  return AppendToFile(path_, line.dump() + "\n");
}

absl::Status RunLog::Sync() { return SyncFile(path_); }

void RunLog::SetGauge(const std::string& key, double value) {
  auto it = gauges_.find(key);
  if (it == gauges_.end()) {
    prometheus::Gauge& gauge =
        prometheus::BuildGauge()
            .Name(MetricName(key))
            .Help("Training metric " + key + " of the last step.")
            .Register(registry_)
            .Add({});
    it = gauges_.emplace(key, &gauge).first;
  }
  it->second->Set(value);
}

absl::Status RunLog::LogValidation(int64_t step, double pass_at_1,
                                   double mean_length, int64_t problems,
                                   double seconds) {
  StepMetrics line = {{"step", step}, {"eval", "validation"}};
  line["val_pass@1"] = pass_at_1;
  line["val_mean_length"] = mean_length;
  line["val_seconds"] = seconds;
  SetGauge("val_pass_at_1", pass_at_1);
  std::cout << absl::StrFormat("step %d: validation pass@1 %.3f on %d problems",
                               step, pass_at_1, problems)
            << std::endl;
  return Append(line);
}

absl::Status RunLog::LogStep(const StepMetrics& m, int64_t step,
                             int64_t max_steps, double elapsed_seconds,
                             absl::Duration step_time) {
  for (const auto& [key, value] : m.items()) {
    if (value.is_number()) SetGauge(key, value.get<double>());
  }
  if (absl::Status s = Append(m); !s.ok()) return s;
  const double per_step = elapsed_seconds / std::max<int64_t>(1, step);
  const double eta = per_step * static_cast<double>(max_steps - step);
  std::cout << absl::StrFormat(
                   "step %d/%d | reward %.3f | acc %.3f | len %.0f | entropy "
                   "%.3f | %.1f s/step | ETA %s",
                   step, max_steps, m.value("reward_mean", 0.0),
                   m.value("accuracy", 0.0),
                   m.value("response_length_mean", 0.0),
                   m.value("entropy", 0.0), absl::ToDoubleSeconds(step_time),
                   FormatDuration(eta))
            << std::endl;
  return absl::OkStatus();
}

void AddTimeMetrics(const StepTimes& times, int64_t generated_tokens,
                    double trained_tokens, StepMetrics& m) {
  m["time/generate"] = times.generate;
  m["time/score"] = times.score;
  m["time/update"] = times.update;
  m["time/publish"] = times.publish;
  m["time/step"] = times.step;
  m["generate_tokens_per_second"] =
      times.generate > 0 ? generated_tokens / times.generate : 0;
  m["update_tokens_per_second"] =
      times.update > 0 ? trained_tokens / times.update : 0;
}

void AddMemoryMetrics(const device::Device& device, StepMetrics& m) {
  const device::MemoryInfo memory = device::QueryMemory(device);
  m["gpu_memory_allocated_bytes"] = memory.allocated_bytes;
  m["gpu_memory_reserved_bytes"] = memory.reserved_bytes;
  // The step's highest (its update's), against model.gpu_memory_gib.
  m["gpu_memory_peak_allocated_bytes"] = memory.peak_allocated_bytes;
  m["gpu_memory_peak_reserved_bytes"] = memory.peak_reserved_bytes;
}

}  // namespace microrl::learner
