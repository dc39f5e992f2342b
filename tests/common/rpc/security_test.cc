#include "common/rpc/security.h"

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace microrl::rpc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Write(const std::string& dir, const std::string& name,
                  const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(SecurityTest, TokensNeedLengthAndASafeAlphabet) {
  EXPECT_TRUE(ValidateToken("abcdefghijklmnop").ok());
  EXPECT_TRUE(ValidateToken("Zm9vYmFy+/=._~-0123456789").ok());
  EXPECT_FALSE(ValidateToken("short").ok());
  EXPECT_FALSE(ValidateToken(std::string(513, 'a')).ok());
  EXPECT_FALSE(ValidateToken("has a space in the token").ok());
  EXPECT_FALSE(ValidateToken("wildcard*wildcard*wild").ok());
}

TEST(SecurityTest, TokenFilesAreTrimmedAndNeverEchoed) {
  const std::string dir = testing::MakeTempDir();
  absl::StatusOr<std::string> token =
      ReadTokenFile(Write(dir, "ok", "  0123456789abcdef0123\n"));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "0123456789abcdef0123");
  const absl::StatusOr<std::string> bad =
      ReadTokenFile(Write(dir, "bad", "secret value with spaces"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(dir + "/bad"));
  EXPECT_THAT(std::string(bad.status().message()), Not(HasSubstr("secret")));
  EXPECT_FALSE(ReadTokenFile(dir + "/missing").ok());
}

TEST(SecurityTest, CredentialErrorsNameTheFlag) {
  const std::string dir = testing::MakeTempDir();
  const std::string not_pem = Write(dir, "cert.txt", "not a certificate");
  ServerSecurity half;
  half.tls_cert_file = not_pem;
  EXPECT_THAT(std::string(MakeServerCredentials(half).status().message()),
              HasSubstr("--tls_cert and --tls_key"));
  ServerSecurity bad_pem;
  bad_pem.tls_cert_file = not_pem;
  bad_pem.tls_key_file = not_pem;
  EXPECT_THAT(std::string(MakeServerCredentials(bad_pem).status().message()),
              HasSubstr("--tls_cert " + not_pem + ": not a PEM file"));
  ServerSecurity ca_only;
  ca_only.tls_client_ca_file = not_pem;
  EXPECT_THAT(std::string(MakeServerCredentials(ca_only).status().message()),
              HasSubstr("--tls_client_ca needs --tls_cert"));
  ServerSecurity bad_token;
  bad_token.token = "tiny";
  EXPECT_FALSE(MakeServerCredentials(bad_token).ok());
  EXPECT_TRUE(MakeServerCredentials(ServerSecurity{}).ok());

  ClientSecurity cert_without_ca;
  cert_without_ca.tls_cert_file = not_pem;
  cert_without_ca.tls_key_file = not_pem;
  EXPECT_THAT(
      std::string(MakeChannelCredentials(cert_without_ca).status().message()),
      HasSubstr("needs the server's CA"));
  ClientSecurity missing_ca;
  missing_ca.tls_ca_file = dir + "/missing.pem";
  EXPECT_THAT(
      std::string(MakeChannelCredentials(missing_ca).status().message()),
      HasSubstr("cannot be read"));
  EXPECT_TRUE(MakeChannelCredentials(ClientSecurity{}).ok());
}

}  // namespace
}  // namespace microrl::rpc
