#ifndef MICRORL_COMMON_RPC_SECURITY_H_
#define MICRORL_COMMON_RPC_SECURITY_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/support/client_interceptor.h"

namespace microrl::rpc {

// For services reached across machines: TLS (a server certificate, and with a
// client CA mutual TLS) and a shared token that every RPC must carry as
// "authorization: Bearer <token>". All optional; by default services listen on
// 127.0.0.1 without either. A token without TLS is accepted on loopback only.
struct ServerSecurity {
  std::string tls_cert_file;  // PEM certificate chain (with tls_key_file)
  std::string tls_key_file;   // PEM private key
  std::string
      tls_client_ca_file;  // PEM CA: clients must present a cert it signed
  std::string token;       // the shared token itself (never logged)
  // Serve a non-loopback address without a client credential (a token over
  // TLS, or mutual TLS): only on a private network that is trusted as a whole
  // (docker compose's). --insecure_allow_remote.
  bool insecure_allow_remote = false;
};

struct ClientSecurity {
  std::string tls_ca_file;    // PEM CA that signed the server's certificate
  std::string tls_cert_file;  // PEM client certificate (mutual TLS)
  std::string tls_key_file;   // PEM client key (mutual TLS)
  // Name the server certificate must carry if it is not the address's host.
  std::string tls_server_name;
  std::string token;
};

// Who can reach a server bound to `host` with `security`: a loopback host is
// always accepted. Any other needs a client credential (a token over TLS, or
// mutual TLS) unless security.insecure_allow_remote; a token without TLS is
// refused there in any case (it would cross the network in clear).
// InvalidArgument naming --host and the flags that would fix it.
absl::Status CheckRemoteAccess(const std::string& host,
                               const ServerSecurity& security);

// A token: 16 to 512 characters of [A-Za-z0-9._~+/=-] (e.g. `openssl rand
// -base64 32`).
absl::Status ValidateToken(const std::string& token);

// The token in `path` (surrounding whitespace trimmed), validated; errors name
// the file but never show its contents.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// TLS credentials per `security`, or insecure ones without a certificate. With
// a token, calls without it end UNAUTHENTICATED; a token without TLS uses
// gRPC's local credentials (loopback connections only). Errors name the flag's
// file (unreadable, not PEM, key without certificate).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurity& security);

// TLS with the given CA (and client certificate), local credentials for a token
// without TLS (the server must be on loopback), else insecure.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientSecurity& security);

// Adds "authorization: Bearer <token>" to every call of a channel.
std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeTokenInterceptorFactory(const std::string& token);

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_SECURITY_H_
