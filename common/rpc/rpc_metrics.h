#ifndef MICRORL_COMMON_RPC_RPC_METRICS_H_
#define MICRORL_COMMON_RPC_RPC_METRICS_H_

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "grpcpp/support/server_interceptor.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace microrl::rpc {

// Per-method RPC metrics, recorded by a server interceptor for every call:
//   microrl_rpc_server_handled_total{method, code}    counter, calls completed
//   microrl_rpc_server_handling_seconds{method}       histogram, call latency
//   microrl_rpc_server_in_flight{method}               gauge, calls running now
// `method` is the full gRPC method ("/microrl.v1.Reward/Score"): only
// registered methods reach interceptors, so the label set is bounded.
// Thread-safe.
class RpcMetrics {
 public:
  explicit RpcMetrics(prometheus::Registry& registry);

  // An interceptor factory for
  // ServerBuilder::experimental().SetInterceptorCreators. The RpcMetrics must
  // outlive the server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  MakeInterceptorFactory();

  void RecordStart(const char* method);
  void RecordEnd(const char* method, grpc::StatusCode code, double seconds);

 private:
  // One method's metric children, made on its first call and then reused (a
  // Family::Add per call would hash labels and, for histograms, allocate).
  struct MethodMetrics {
    prometheus::Gauge* in_flight = nullptr;
    prometheus::Histogram* seconds = nullptr;
    // By status code (0..16), made on first use.
    std::array<prometheus::Counter*, 17> handled = {};
  };
  MethodMetrics& ForMethod(const std::string& method);  // requires mu_
  prometheus::Counter& Handled(MethodMetrics& metrics,
                               const std::string& method,
                               grpc::StatusCode code);  // requires mu_

  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
  prometheus::Family<prometheus::Gauge>& in_flight_;

  std::mutex mu_;
  // Keyed by full method name; guarded by mu_. Values are stable in memory.
  std::unordered_map<std::string, std::unique_ptr<MethodMetrics>> methods_;
};

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_RPC_METRICS_H_
