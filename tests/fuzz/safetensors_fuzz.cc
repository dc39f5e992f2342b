// libFuzzer target over the safetensors header parser and validator: any bytes
// must give either an error or a file whose every tensor lies inside the data
// section (read here in full, so AddressSanitizer catches a lying offset).
// Built and run by tests/fuzz/run_fuzz.sh safetensors.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/safetensors/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = microrl::safetensors::SafetensorsFile::FromBytes(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!file.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& info : (*file)->tensors()) {
    const uint8_t* bytes = (*file)->Data(info);
    for (uint64_t i = 0; i < info.end - info.begin; ++i) sink ^= bytes[i];
    if ((*file)->Find(info.name) != &info) __builtin_trap();
    (void)info.numel();
  }
  return 0;
}
