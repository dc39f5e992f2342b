#ifndef MICRORL_COMMON_BASE_NET_H_
#define MICRORL_COMMON_BASE_NET_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace microrl {

// A parsed "host:port" address. IPv6 hosts are held without brackets.
struct HostPort {
  std::string host;
  int port = 0;

  // "host:port", with brackets around an IPv6 host ("[::1]:50051").
  std::string ToString() const;
};

// Parses "host:port" or "[ipv6]:port"; an IPv6 host without brackets is
// rejected. The port must be in [1, 65535]; the host must be non-empty and
// contain no spaces.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address);

// Checks a port given by flag `flag_name` (for the message): [0, 65535] when
// `allow_zero` (0 = pick a free port), else [1, 65535].
absl::Status ValidatePort(int port, absl::string_view flag_name,
                          bool allow_zero);

// Joins a host (bracketing IPv6) and a port into an address string.
std::string JoinHostPort(absl::string_view host, int port);

// Every address `host` resolves to (A and AAAA records, each once, in the
// resolver's order) as "ip:port" strings ("[ip6]:port"); an IP literal
// resolves to itself. NotFound naming the host when it resolves to nothing.
absl::StatusOr<std::vector<std::string>> ResolveAll(absl::string_view host,
                                                    int port);

// True for "127.0.0.1" (and the rest of 127.0.0.0/8), "::1" and "localhost".
bool IsLoopbackHost(absl::string_view host);

// True when a gRPC peer string (ServerContext::peer(): "ipv4:127.0.0.1:5000",
// "ipv6:[::1]:5000", "ipv6:%5B::ffff:127.0.0.1%5D:5000", "unix:/path") is this
// host.
bool IsLoopbackPeer(absl::string_view peer);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_NET_H_
