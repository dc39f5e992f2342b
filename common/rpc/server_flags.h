#ifndef MICRORL_COMMON_RPC_SERVER_FLAGS_H_
#define MICRORL_COMMON_RPC_SERVER_FLAGS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "common/rpc/security.h"
#include "common/rpc/server_main.h"

namespace microrl::rpc {

// The flags every service binary serves with: --host, --port, --metrics_port,
// --ready_file and --max_message_mb, and the security flags below.
absl::StatusOr<ServerMainOptions> ServerMainOptionsFromFlags();

// The same for a binary about to serve: the options validated
// (ValidateServerMainOptions) and no positional argument left over.
absl::StatusOr<ServerMainOptions> ServingOptionsFromFlags(
    const std::vector<char*>& positional);

// A binary's own default ports, set before its command line is parsed (which
// then overrides them).
void SetServerFlagDefaults(int port, int metrics_port);

// The service binaries' security flags: --tls_cert, --tls_key, --tls_client_ca
// and --auth_token_file (the token itself is read from the file, or from the
// environment variable MICRORL_AUTH_TOKEN, never from the command line, where
// `ps` would show it). Errors name the flag.
absl::StatusOr<ServerSecurity> ServerSecurityFromFlags();

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_SERVER_FLAGS_H_
