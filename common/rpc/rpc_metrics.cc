#include "common/rpc/rpc_metrics.h"

#include <chrono>
#include <string>

namespace microrl::rpc {
namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "OTHER";
  }
}

// Lives as long as one call. Records the call's end just before its status is
// sent, so a client that has seen the status also sees it counted; a call that
// ends without sending a status (the client went away) is recorded as CANCELLED
// when the interceptor is destroyed.
class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(RpcMetrics* metrics, const char* method)
      : metrics_(metrics),
        method_(method),
        start_(std::chrono::steady_clock::now()) {
    metrics_->RecordStart(method_);
  }
  ~MetricsInterceptor() override {
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (!recorded_ &&
        methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    const std::chrono::duration<double> elapsed =
        std::chrono::steady_clock::now() - start_;
    metrics_->RecordEnd(method_, code, elapsed.count());
  }

  RpcMetrics* const metrics_;
  // Owned by gRPC's method registry; outlives the call.
  const char* const method_;
  const std::chrono::steady_clock::time_point start_;
  // gRPC runs one call's interception hooks one at a time: no lock needed.
  bool recorded_ = false;
};

class MetricsInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(RpcMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_, info->method());
  }

 private:
  RpcMetrics* const metrics_;
};

}  // namespace

RpcMetrics::RpcMetrics(prometheus::Registry& registry)
    : handled_(
          prometheus::BuildCounter()
              .Name("microrl_rpc_server_handled_total")
              .Help("RPCs completed by this server, by method and status code.")
              .Register(registry)),
      handling_seconds_(prometheus::BuildHistogram()
                            .Name("microrl_rpc_server_handling_seconds")
                            .Help("Latency of RPCs served, seconds.")
                            .Register(registry)),
      in_flight_(prometheus::BuildGauge()
                     .Name("microrl_rpc_server_in_flight")
                     .Help("RPCs being served now.")
                     .Register(registry)) {}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
RpcMetrics::MakeInterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

RpcMetrics::MethodMetrics& RpcMetrics::ForMethod(const std::string& method) {
  std::unique_ptr<MethodMetrics>& entry = methods_[method];
  if (entry == nullptr) {
    static const prometheus::Histogram::BucketBoundaries kBuckets = {
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1,      2.5,   5,      10,    25,   50,    100,  250, 600};
    entry = std::make_unique<MethodMetrics>();
    entry->in_flight = &in_flight_.Add({{"method", method}});
    entry->seconds = &handling_seconds_.Add({{"method", method}}, kBuckets);
  }
  return *entry;
}

prometheus::Counter& RpcMetrics::Handled(MethodMetrics& metrics,
                                         const std::string& method,
                                         grpc::StatusCode code) {
  const int index = static_cast<int>(code);
  if (index < 0 || index >= static_cast<int>(metrics.handled.size())) {
    return handled_.Add({{"method", method}, {"code", CodeName(code)}});
  }
  prometheus::Counter*& counter = metrics.handled[index];
  if (counter == nullptr) {
    counter = &handled_.Add({{"method", method}, {"code", CodeName(code)}});
  }
  return *counter;
}

void RpcMetrics::RecordStart(const char* method) {
  prometheus::Gauge* in_flight;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight = ForMethod(method).in_flight;
  }
  in_flight->Increment();
}

void RpcMetrics::RecordEnd(const char* method, grpc::StatusCode code,
                           double seconds) {
  MethodMetrics* metrics;
  prometheus::Counter* handled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    metrics = &ForMethod(method);
    handled = &Handled(*metrics, method, code);
  }
  metrics->in_flight->Decrement();
  handled->Increment();
  metrics->seconds->Observe(seconds);
}

}  // namespace microrl::rpc
