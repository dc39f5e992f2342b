#ifndef MICRORL_COMMON_BASE_RANDOM_H_
#define MICRORL_COMMON_BASE_RANDOM_H_

#include <cstdint>

namespace microrl {

// SplitMix64 (Steele, Lea and Flood, 2014) of `z`: the golden-ratio increment
// followed by the finalizer. Every seed the project derives (per request, per
// completion, per row, per epoch) goes through it, so a given seed means the
// same thing in every service.
constexpr uint64_t SplitMix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The SplitMix64 generator: the next output of the sequence `state` is at,
// advancing it.
inline uint64_t SplitMix64Next(uint64_t& state) {
  const uint64_t out = SplitMix64(state);
  state += 0x9e3779b97f4a7c15ULL;
  return out;
}

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_RANDOM_H_
