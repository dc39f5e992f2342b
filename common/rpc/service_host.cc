#include "common/rpc/service_host.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/net.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace microrl::rpc {

absl::StatusOr<std::unique_ptr<ServiceHost>> ServiceHost::Start(
    const ServiceHostOptions& options,
    const std::vector<HostedService>& services,
    prometheus::Registry& registry) {
  if (services.empty()) {
    // gRPC's synchronous server (and its built-in health service) needs a
    // service.
    return absl::InvalidArgumentError(
        "a ServiceHost needs at least one service");
  }
  grpc::EnableDefaultHealthCheckService(true);
  auto metrics = std::make_unique<RpcMetrics>(registry);

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options.security);
  if (!credentials.ok()) return credentials.status();
  if (absl::Status s = CheckRemoteAccess(options.host, options.security);
      !s.ok()) {
    return s;
  }

  const std::string address = JoinHostPort(options.host, options.port);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, *credentials, &port);

  // Without this a second server could silently share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  grpc::ResourceQuota quota("microrl-" + address);
  quota.SetMaxThreads(options.max_threads);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             options.max_concurrent_streams);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  for (const HostedService& hosted : services)
    builder.RegisterService(hosted.service);
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(metrics->MakeInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));

  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve gRPC on ", address, " (address in use or not local?)"));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(true);
  for (const HostedService& hosted : services) {
    health->SetServingStatus(hosted.name, true);
  }
  return std::unique_ptr<ServiceHost>(
      new ServiceHost(options, std::move(metrics), std::move(server), port));
}

ServiceHost::ServiceHost(ServiceHostOptions options,
                         std::unique_ptr<RpcMetrics> metrics,
                         std::unique_ptr<grpc::Server> server, int port)
    : options_(std::move(options)),
      metrics_(std::move(metrics)),
      server_(std::move(server)),
      port_(port) {}

ServiceHost::~ServiceHost() { Shutdown(); }

void ServiceHost::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) return;
  shut_down_ = true;
  // Health watchers see NOT_SERVING before the listener closes.
  server_->GetHealthCheckService()->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(options_.shutdown_grace));
  server_->Wait();
}

}  // namespace microrl::rpc
