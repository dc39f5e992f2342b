#ifndef MICRORL_COMMON_RPC_CLIENT_H_
#define MICRORL_COMMON_RPC_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/limits.h"
#include "common/rpc/security.h"
#include "grpcpp/channel.h"
#include "proto/health.pb.h"

namespace microrl::rpc {

// An insecure channel to `address` ("host:port") accepting messages up to
// `max_message_bytes` (the servers' default limit when omitted).
std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& address,
    int max_message_bytes = kDefaultMaxMessageBytes);

// A channel with TLS and/or a token per `security` (insecure and token-less
// when it is empty). InvalidArgument for unreadable or missing PEM files or a
// malformed token.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeSecureChannel(
    const std::string& address, const ClientSecurity& security,
    int max_message_bytes = kDefaultMaxMessageBytes);

using HealthStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

// Asks the peer's health service for `service` ("" for the whole server).
// Returns the serving status, or the RPC error: Unavailable when nothing
// listens at the address, DeadlineExceeded when nobody answers within
// `timeout`, NotFound when the server does not know the service.
absl::StatusOr<HealthStatus> CheckHealth(std::shared_ptr<grpc::Channel> channel,
                                         const std::string& service,
                                         absl::Duration timeout);

// "SERVING", "NOT_SERVING", ...
std::string HealthStatusName(HealthStatus status);

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_CLIENT_H_
