// libFuzzer target over the tokenizer: the first byte picks a mode.
//   0: encode the rest with a real tokenizer (MICRORL_FUZZ_TOKENIZER, a
//      tokenizer.json), decode the ids back, and stream them through the
//      incremental decoder (its pieces must concatenate to the full decode);
//   1: decode the rest read as 32-bit ids, in range or not;
//   2: parse the rest as a tokenizer.json (a corrupt or hostile file must give
//      an error, never a crash), and if it loads, encode and decode with it.
// Built and run by tests/fuzz/run_fuzz.sh tokenizer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"

namespace {

using microrl::tokenizer::IncrementalDecoder;
using microrl::tokenizer::Tokenizer;

const Tokenizer& RealTokenizer() {
  static const Tokenizer* tokenizer = [] {
    const char* path = std::getenv("MICRORL_FUZZ_TOKENIZER");
    if (path == nullptr) __builtin_trap();  // run_fuzz.sh sets it
    auto loaded = Tokenizer::FromFile(path);
    if (!loaded.ok()) __builtin_trap();
    return loaded->release();
  }();
  return *tokenizer;
}

void RoundTrip(const Tokenizer& tokenizer, const std::string& text) {
  const std::vector<int32_t> ids = tokenizer.Encode(text, /*add_special=*/false);
  const std::string decoded = tokenizer.Decode(ids, /*skip_special=*/false);
  IncrementalDecoder stream(tokenizer, /*skip_special=*/false);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.Add(id);
  streamed += stream.Flush();
  if (streamed != decoded) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      RoundTrip(RealTokenizer(), rest);
      break;
    case 1: {
      std::vector<int32_t> ids(rest.size() / 4);
      if (!ids.empty()) std::memcpy(ids.data(), rest.data(), ids.size() * 4);
      (void)RealTokenizer().Decode(ids, /*skip_special=*/true);
      (void)RealTokenizer().Decode(ids, /*skip_special=*/false);
      break;
    }
    default: {
      auto tokenizer = Tokenizer::FromJson(rest, "fuzz.json");
      if (tokenizer.ok()) RoundTrip(**tokenizer, "Hello, world! 123 \xc3\xa9");
      break;
    }
  }
  return 0;
}
