#include "common/rpc/client.h"

#include <chrono>

#include "common/rpc/security.h"
#include "common/rpc/status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "proto/health.grpc.pb.h"

namespace microrl::rpc {

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           int max_message_bytes) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes);
  args.SetMaxSendMessageSize(max_message_bytes);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeSecureChannel(
    const std::string& address, const ClientSecurity& security,
    int max_message_bytes) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(security);
  if (!credentials.ok()) return credentials.status();
  if (!security.token.empty()) {
    if (absl::Status s = ValidateToken(security.token); !s.ok()) return s;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes);
  args.SetMaxSendMessageSize(max_message_bytes);
  if (!security.tls_server_name.empty())
    args.SetSslTargetNameOverride(security.tls_server_name);
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  if (!security.token.empty())
    interceptors.push_back(MakeTokenInterceptorFactory(security.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, *credentials, args, std::move(interceptors));
}

absl::StatusOr<HealthStatus> CheckHealth(std::shared_ptr<grpc::Channel> channel,
                                         const std::string& service,
                                         absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(std::move(channel));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response.status();
}

std::string HealthStatusName(HealthStatus status) {
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(status);
}

}  // namespace microrl::rpc
