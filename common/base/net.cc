#include "common/base/net.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace microrl {

std::string HostPort::ToString() const { return JoinHostPort(host, port); }

std::string JoinHostPort(absl::string_view host, int port) {
  if (absl::StrContains(host, ':')) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<HostPort> ParseHostPort(absl::string_view address) {
  auto error = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad address \"", address, "\": ", why, " (want host:port)"));
  };
  absl::string_view host;
  absl::string_view port_text;
  if (absl::StartsWith(address, "[")) {
    const size_t close = address.find(']');
    if (close == absl::string_view::npos) return error("unclosed '['");
    host = address.substr(1, close - 1);
    absl::string_view rest = address.substr(close + 1);
    if (!absl::StartsWith(rest, ":")) return error("missing ':port' after ']'");
    port_text = rest.substr(1);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos) return error("missing ':port'");
    host = address.substr(0, colon);
    if (absl::StrContains(host, ':')) return error("IPv6 hosts need brackets");
    port_text = address.substr(colon + 1);
  }
  if (host.empty()) return error("empty host");
  for (char c : host) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      return error("space in host");
    }
  }
  int port = 0;
  if (port_text.empty() || !absl::SimpleAtoi(port_text, &port) ||
      !absl::ascii_isdigit(static_cast<unsigned char>(port_text[0]))) {
    return error("port is not a number");
  }
  if (port < 1 || port > 65535) return error("port out of range [1, 65535]");
  return HostPort{std::string(host), port};
}

absl::Status ValidatePort(int port, absl::string_view flag_name,
                          bool allow_zero) {
  const int low = allow_zero ? 0 : 1;
  if (port < low || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag_name, "=", port, ": must be in [", low,
                     ", 65535]", allow_zero ? " (0 picks a free port)" : ""));
  }
  return absl::OkStatus();
}

bool IsLoopbackHost(absl::string_view host) {
  return host == "localhost" || host == "::1" || host == "[::1]" ||
         absl::StartsWith(host, "127.");
}

bool IsLoopbackPeer(absl::string_view peer) {
  if (absl::StartsWith(peer, "unix:") ||
      absl::StartsWith(peer, "unix-abstract:"))
    return true;
  if (!absl::ConsumePrefix(&peer, "ipv4:") &&
      !absl::ConsumePrefix(&peer, "ipv6:")) {
    return false;
  }
  const size_t colon = peer.rfind(':');
  if (colon == absl::string_view::npos) return false;
  std::string host =
      absl::StrReplaceAll(peer.substr(0, colon), {{"%5B", "["}, {"%5D", "]"}});
  absl::string_view h = host;
  absl::ConsumePrefix(&h, "[");
  absl::ConsumeSuffix(&h, "]");
  absl::ConsumePrefix(&h, "::ffff:");  // IPv4-mapped
  return IsLoopbackHost(h);
}

absl::StatusOr<std::vector<std::string>> ResolveAll(absl::string_view host,
                                                    int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string name(host);
  if (const int rc = getaddrinfo(name.c_str(), nullptr, &hints, &found);
      rc != 0 || found == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("cannot resolve \"", host,
                     "\": ", rc != 0 ? gai_strerror(rc) : "none"));
  }
  std::vector<std::string> out;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {0};
    const void* where =
        a->ai_family == AF_INET6
            ? static_cast<const void*>(
                  &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr)
            : static_cast<const void*>(
                  &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr);
    if (inet_ntop(a->ai_family, where, text, sizeof(text)) == nullptr) continue;
    const std::string address = JoinHostPort(text, port);
    if (std::find(out.begin(), out.end(), address) == out.end())
      out.push_back(address);
  }
  freeaddrinfo(found);
  if (out.empty()) {
    return absl::NotFoundError(
        absl::StrCat("\"", host, "\" resolves to no address"));
  }
  return out;
}

}  // namespace microrl
