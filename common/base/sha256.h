#ifndef MICRORL_COMMON_BASE_SHA256_H_
#define MICRORL_COMMON_BASE_SHA256_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace microrl {

// Lowercase hex SHA-256 of `bytes` (OpenSSL).
std::string Sha256Hex(absl::string_view bytes);

// The same over bytes that arrive in pieces (e.g. a gRPC stream, hashed as it
// arrives rather than after).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view bytes);
  // Lowercase hex digest of everything added; call once.
  std::string HexDigest();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_SHA256_H_
