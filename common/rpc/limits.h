#ifndef MICRORL_COMMON_RPC_LIMITS_H_
#define MICRORL_COMMON_RPC_LIMITS_H_

namespace microrl::rpc {

// Largest gRPC message microrl servers and clients accept by default (256 MiB):
// a full Generate response for 64 prompts x 16 completions x 3584 tokens is
// about 40 MB.
inline constexpr int kDefaultMaxMessageBytes = 256 << 20;

}  // namespace microrl::rpc

#endif  // MICRORL_COMMON_RPC_LIMITS_H_
