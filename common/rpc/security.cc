#include "common/rpc/security.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/base/net.h"
#include "grpcpp/security/auth_metadata_processor.h"

namespace microrl::rpc {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": cannot be read"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  if (text.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": not a PEM file"));
  }
  return text;
}

// Admits calls whose "authorization" metadata is "Bearer <token>" (compared in
// constant time); others end UNAUTHENTICATED before reaching a handler.
class TokenProcessor : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenProcessor(const std::string& token)
      : expected_(absl::StrCat("Bearer ", token)) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext*,
                       OutputMetadata*, OutputMetadata*) override {
    const auto it = metadata.find("authorization");
    if (it == metadata.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "this server requires a token (authorization: "
                          "Bearer <token>)");
    }
    const grpc::string_ref given = it->second;
    unsigned char differ = given.size() == expected_.size() ? 0 : 1;
    for (size_t i = 0; i < expected_.size(); ++i) {
      differ |= static_cast<unsigned char>(
          expected_[i] ^ (i < given.size() ? given.data()[i] : 0));
    }
    if (differ != 0) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong token");
    }
    return grpc::Status::OK;
  }

 private:
  const std::string expected_;
};

class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;  // owned by the factory
};

class TokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(const std::string& token)
      : header_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  const std::string header_;
};

}  // namespace

absl::Status ValidateToken(const std::string& token) {
  if (token.size() < 16 || token.size() > 512) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the token has ", token.size(), " characters; 16 to 512 are needed"));
  }
  for (char c : token) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        std::string("._~+/=-").find(c) == std::string::npos) {
      return absl::InvalidArgumentError(
          "the token may hold only letters, digits and ._~+/=- (e.g. the "
          "output of `openssl rand -base64 32`)");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": cannot be read"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string token(absl::StripAsciiWhitespace(buffer.str()));
  if (absl::Status s = ValidateToken(token); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": ", s.message()));
  }
  return token;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerSecurity& security) {
  if (security.tls_cert_file.empty() != security.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key: give both or neither");
  }
  if (!security.token.empty()) {
    if (absl::Status s = ValidateToken(security.token); !s.ok()) return s;
  }
  if (security.tls_cert_file.empty()) {
    if (!security.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca needs --tls_cert and --tls_key");
    }
    if (security.token.empty()) return grpc::InsecureServerCredentials();
    // A token without TLS: loopback connections only (gRPC's local
    // credentials), so the token never crosses a network in clear text.
    std::shared_ptr<grpc::ServerCredentials> local =
        grpc::experimental::LocalServerCredentials(LOCAL_TCP);
    local->SetAuthMetadataProcessor(
        std::make_shared<TokenProcessor>(security.token));
    return local;
  }
  absl::StatusOr<std::string> cert =
      ReadPem(security.tls_cert_file, "--tls_cert");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(security.tls_key_file, "--tls_key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!security.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPem(security.tls_client_ca_file, "--tls_client_ca");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  std::shared_ptr<grpc::ServerCredentials> tls =
      grpc::SslServerCredentials(options);
  if (!security.token.empty()) {
    tls->SetAuthMetadataProcessor(
        std::make_shared<TokenProcessor>(security.token));
  }
  return tls;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientSecurity& security) {
  if (security.tls_cert_file.empty() != security.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client certificate needs its key, and the key its certificate");
  }
  if (security.tls_ca_file.empty()) {
    if (!security.tls_cert_file.empty()) {
      return absl::InvalidArgumentError(
          "a TLS client certificate needs the server's CA (tls_ca)");
    }
    // A token without TLS goes to a loopback server with local credentials.
    if (!security.token.empty())
      return grpc::experimental::LocalCredentials(LOCAL_TCP);
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions options;
  absl::StatusOr<std::string> ca = ReadPem(security.tls_ca_file, "tls_ca");
  if (!ca.ok()) return ca.status();
  options.pem_root_certs = *ca;
  if (!security.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadPem(security.tls_cert_file, "tls_cert");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(security.tls_key_file, "tls_key");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *cert;
    options.pem_private_key = *key;
  }
  return grpc::SslCredentials(options);
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeTokenInterceptorFactory(const std::string& token) {
  return std::make_unique<TokenInterceptorFactory>(token);
}

absl::Status CheckRemoteAccess(const std::string& host,
                               const ServerSecurity& security) {
  if (IsLoopbackHost(host)) return absl::OkStatus();
  if (!security.token.empty() && security.tls_cert_file.empty()) {
    // Such a server takes loopback connections only (local credentials).
    return absl::InvalidArgumentError(absl::StrCat(
        "--host=", host,
        ": a token without TLS is for loopback only (it would cross the "
        "network in clear); add --tls_cert and --tls_key"));
  }
  if (security.token.empty() && security.tls_client_ca_file.empty() &&
      !security.insecure_allow_remote) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--host=", host,
        " is reachable from other machines and no client credential is set: "
        "give a token (--auth_token_file or MICRORL_AUTH_TOKEN, with "
        "--tls_cert and --tls_key) or mutual TLS (--tls_client_ca), or pass "
        "--insecure_allow_remote on a private network you trust as a whole"));
  }
  return absl::OkStatus();
}

}  // namespace microrl::rpc
