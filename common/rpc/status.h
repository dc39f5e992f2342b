#ifndef MICRORL_COMMON_RPC_STATUS_H_
#define MICRORL_COMMON_RPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace microrl::rpc {

// The one mapping between absl::Status (library boundaries) and grpc::Status
// (the wire). Codes map one to one (both use the canonical codes); the message
// is kept.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_STATUS_H_
