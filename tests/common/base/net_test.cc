#include "common/base/net.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl {
namespace {

TEST(IsLoopbackPeerTest, ReadsGrpcPeerStrings) {
  for (const char* peer : {"ipv4:127.0.0.1:5000", "ipv6:[::1]:5000",
                           "ipv6:%5B::ffff:127.0.0.1%5D:43210",
                           "ipv6:[::ffff:127.0.0.1]:1", "unix:/tmp/socket"}) {
    EXPECT_TRUE(IsLoopbackPeer(peer)) << peer;
  }
  for (const char* peer :
       {"ipv4:10.0.0.1:5000", "ipv6:[2001:db8::1]:5000",
        "ipv6:%5B::ffff:10.1.2.3%5D:1", "127.0.0.1:5000", "", "ipv4:"}) {
    EXPECT_FALSE(IsLoopbackPeer(peer)) << peer;
  }
}

TEST(IsLoopbackHostTest, KnowsLoopbackNames) {
  for (const char* host : {"127.0.0.1", "127.1.2.3", "localhost", "::1"})
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  for (const char* host : {"0.0.0.0", "10.0.0.1", "example.com", "::", ""})
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
}

TEST(ParseHostPortTest, AcceptsHostnamesAndIpv4) {
  absl::StatusOr<HostPort> parsed = ParseHostPort("localhost:50051");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->host, "localhost");
  EXPECT_EQ(parsed->port, 50051);

  parsed = ParseHostPort("10.0.0.7:1");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->ToString(), "10.0.0.7:1");
}

TEST(ParseHostPortTest, AcceptsBracketedIpv6AndRoundTrips) {
  absl::StatusOr<HostPort> parsed = ParseHostPort("[::1]:65535");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->host, "::1");
  EXPECT_EQ(parsed->port, 65535);
  EXPECT_EQ(parsed->ToString(), "[::1]:65535");
}

TEST(ParseHostPortTest, RejectsMalformedAddressesWithReason) {
  struct Case {
    const char* address;
    const char* reason;
  };
  for (const Case& c :
       {Case{"localhost", "missing ':port'"}, Case{":80", "empty host"},
        Case{"host:", "not a number"}, Case{"host:http", "not a number"},
        Case{"host:+80", "not a number"}, Case{"host:0", "out of range"},
        Case{"host:65536", "out of range"}, Case{"::1:80", "need brackets"},
        Case{"[::1]80", "missing ':port'"}, Case{"[::1:80", "unclosed"},
        Case{"my host:80", "space"}}) {
    const absl::StatusOr<HostPort> parsed = ParseHostPort(c.address);
    ASSERT_FALSE(parsed.ok()) << c.address;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(parsed.status().message()).find(c.reason),
              std::string::npos)
        << c.address << ": " << parsed.status();
    EXPECT_NE(std::string(parsed.status().message()).find(c.address),
              std::string::npos);
  }
}

TEST(ValidatePortTest, NamesTheFlagAndRange) {
  EXPECT_TRUE(ValidatePort(0, "port", /*allow_zero=*/true).ok());
  EXPECT_TRUE(ValidatePort(65535, "port", true).ok());
  const absl::Status zero =
      ValidatePort(0, "metrics_port", /*allow_zero=*/false);
  EXPECT_EQ(zero.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(zero.message(), "--metrics_port=0: must be in [1, 65535]");
  EXPECT_EQ(ValidatePort(70000, "port", true).message(),
            "--port=70000: must be in [0, 65535] (0 picks a free port)");
  EXPECT_FALSE(ValidatePort(-1, "port", true).ok());
}

TEST(JoinHostPortTest, BracketsIpv6Only) {
  EXPECT_EQ(JoinHostPort("127.0.0.1", 5), "127.0.0.1:5");
  EXPECT_EQ(JoinHostPort("::", 5), "[::]:5");
}

TEST(ResolveAllTest, NamesAndLiterals) {
  absl::StatusOr<std::vector<std::string>> local =
      ResolveAll("localhost", 50051);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_THAT(*local, ::testing::Contains("127.0.0.1:50051"));
  EXPECT_EQ(*ResolveAll("10.1.2.3", 7), std::vector<std::string>{"10.1.2.3:7"});
  EXPECT_EQ(*ResolveAll("::1", 7), std::vector<std::string>{"[::1]:7"});
  absl::StatusOr<std::vector<std::string>> none =
      ResolveAll("no-such-host.invalid", 1);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(),
              ::testing::HasSubstr("no-such-host.invalid"));
}

}  // namespace
}  // namespace microrl
