#include "common/metrics/process_collector.h"

#include <map>

#include "common/base/version.h"
#include "gtest/gtest.h"

namespace microrl::metrics {
namespace {

TEST(ProcessCollectorTest, ReportsThisProcess) {
  ProcessCollector collector("unit");
  std::map<std::string, prometheus::MetricFamily> by_name;
  for (prometheus::MetricFamily& family : collector.Collect()) {
    ASSERT_EQ(family.metric.size(), 1u) << family.name;
    by_name[family.name] = family;
  }
  const prometheus::ClientMetric& build =
      by_name.at("microrl_build_info").metric[0];
  EXPECT_EQ(build.gauge.value, 1.0);
  ASSERT_EQ(build.label.size(), 2u);
  EXPECT_EQ(build.label[0].value, "unit");
  EXPECT_EQ(build.label[1].value, Version());

  // A test binary has a few MiB resident, at least one thread, and has used
  // CPU.
  EXPECT_GT(
      by_name.at("microrl_process_resident_memory_bytes").metric[0].gauge.value,
      1e6);
  EXPECT_GE(
      by_name.at("microrl_process_virtual_memory_bytes").metric[0].gauge.value,
      by_name.at("microrl_process_resident_memory_bytes")
          .metric[0]
          .gauge.value);
  EXPECT_GE(by_name.at("microrl_process_threads").metric[0].gauge.value, 1.0);
  EXPECT_GT(
      by_name.at("microrl_process_cpu_seconds_total").metric[0].counter.value,
      0.0);
  EXPECT_EQ(by_name.at("microrl_process_cpu_seconds_total").type,
            prometheus::MetricType::Counter);
  EXPECT_GT(
      by_name.at("microrl_process_start_time_seconds").metric[0].gauge.value,
      1.7e9);
}

}  // namespace
}  // namespace microrl::metrics
