#include "common/rpc/server_flags.h"

#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address to serve gRPC and /metrics on.");
ABSL_FLAG(int, port, 0,
          "gRPC port (0: pick a free port); each service has its own default: "
          "50051 rollout_server, 50052 reward_service, 50053 learner.");
ABSL_FLAG(int, metrics_port, 0,
          "Prometheus /metrics port (0: pick a free port); each service has "
          "its own default: 9401 rollout_server, 9402 reward_service, 9403 "
          "learner.");
ABSL_FLAG(
    std::string, ready_file, "",
    "Once serving, write {grpc_port, metrics_port, pid} as JSON to this file.");
ABSL_FLAG(int, max_message_mb, 256,
          "Largest gRPC message accepted or sent, MiB.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA: require clients to present a certificate it signed "
          "(mutual TLS).");
ABSL_FLAG(bool, insecure_allow_remote, false,
          "Serve a --host reachable from other machines without a client "
          "credential (a token with TLS, or mutual TLS): only on a private "
          "network trusted as a whole, such as docker compose's. Without it "
          "such a --host is refused.");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding a shared token every RPC must carry ('authorization: "
          "Bearer <token>'); the environment variable MICRORL_AUTH_TOKEN is "
          "used when this is unset.");

namespace microrl::rpc {

void SetServerFlagDefaults(int port, int metrics_port) {
  absl::SetFlag(&FLAGS_port, port);
  absl::SetFlag(&FLAGS_metrics_port, metrics_port);
}

absl::StatusOr<ServerMainOptions> ServerMainOptionsFromFlags() {
  ServerMainOptions server;
  server.host = absl::GetFlag(FLAGS_host);
  server.port = absl::GetFlag(FLAGS_port);
  server.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  server.max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  server.ready_file = absl::GetFlag(FLAGS_ready_file);
  absl::StatusOr<ServerSecurity> security = ServerSecurityFromFlags();
  if (!security.ok()) return security.status();
  server.security = *std::move(security);
  return server;
}

absl::StatusOr<ServerMainOptions> ServingOptionsFromFlags(
    const std::vector<char*>& positional) {
  absl::StatusOr<ServerMainOptions> server = ServerMainOptionsFromFlags();
  if (!server.ok()) return server.status();
  for (const absl::Status& status : {CheckNoPositionalArguments(positional),
                                     ValidateServerMainOptions(*server)}) {
    if (!status.ok()) return status;
  }
  return server;
}

absl::StatusOr<ServerSecurity> ServerSecurityFromFlags() {
  ServerSecurity security;
  security.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  security.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  security.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  security.insecure_allow_remote = absl::GetFlag(FLAGS_insecure_allow_remote);
  const std::string token_file = absl::GetFlag(FLAGS_auth_token_file);
  if (!token_file.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile(token_file);
    if (!token.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth_token_file: ", token.status().message()));
    }
    security.token = *token;
  } else if (const char* env = std::getenv("MICRORL_AUTH_TOKEN");
             env != nullptr && *env != '\0') {
    if (absl::Status s = ValidateToken(env); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("MICRORL_AUTH_TOKEN: ", s.message()));
    }
    security.token = env;
  }
  // Files are checked now, so a typo fails at start-up with the flag named.
  if (absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
          MakeServerCredentials(security);
      !credentials.ok()) {
    return credentials.status();
  }
  return security;
}

}  // namespace microrl::rpc
