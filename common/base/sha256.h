#ifndef MICRORL_COMMON_BASE_SHA256_H_
#define MICRORL_COMMON_BASE_SHA256_H_

#include <string>

#include "absl/strings/string_view.h"

namespace microrl {

// Lowercase hex SHA-256 of `bytes` (OpenSSL).
std::string Sha256Hex(absl::string_view bytes);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_SHA256_H_
