#ifndef MICRORL_COMMON_RPC_SECURITY_FLAGS_H_
#define MICRORL_COMMON_RPC_SECURITY_FLAGS_H_

#include "absl/status/statusor.h"
#include "common/rpc/security.h"

namespace microrl::rpc {

// The service binaries' security flags: --tls_cert, --tls_key, --tls_client_ca
// and --auth_token_file (the token itself is read from the file, or from the
// environment variable MICRORL_AUTH_TOKEN, never from the command line, where
// `ps` would show it). Errors name the flag.
absl::StatusOr<ServerSecurity> ServerSecurityFromFlags();

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_SECURITY_FLAGS_H_
