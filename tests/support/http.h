#ifndef MICRORL_TESTS_SUPPORT_HTTP_H_
#define MICRORL_TESTS_SUPPORT_HTTP_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace microrl::testing {

struct HttpResponse {
  int status = 0;       // e.g. 200
  std::string headers;  // raw header block
  std::string body;
};

// A plain HTTP/1.0 GET of http://host:port<target> over a TCP socket.
absl::StatusOr<HttpResponse> HttpGet(
    const std::string& host, int port, const std::string& target,
    absl::Duration timeout = absl::Seconds(10));

// Sends `raw_request` as-is to host:port and parses the HTTP response.
absl::StatusOr<HttpResponse> HttpRawRequest(
    const std::string& host, int port, const std::string& raw_request,
    absl::Duration timeout = absl::Seconds(10));

// Percent-encodes a query-string value.
std::string UrlEncode(const std::string& value);

}  // namespace microrl::testing

#endif  // MICRORL_TESTS_SUPPORT_HTTP_H_
