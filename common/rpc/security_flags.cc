#include "common/rpc/security_flags.h"

#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

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
