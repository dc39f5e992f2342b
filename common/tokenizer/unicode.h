#ifndef MICRORL_COMMON_TOKENIZER_UNICODE_H_
#define MICRORL_COMMON_TOKENIZER_UNICODE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

// UTF-8 helpers for the tokenizer and the template engine.
namespace microrl::tokenizer {

// Appends the UTF-8 encoding of code point `cp` to `out`.
void AppendUtf8(char32_t cp, std::string* out);

// Number of bytes of a complete, valid UTF-8 sequence starting at text[pos], or
// 0 if the bytes there are not one (invalid or truncated).
int ValidSequenceLength(absl::string_view text, size_t pos);

// Whether `text` is entirely valid UTF-8.
bool IsValidUtf8(absl::string_view text);

// Decodes valid UTF-8 into code points; invalid bytes become U+FFFD.
std::u32string DecodeUtf8(absl::string_view text);
std::string EncodeUtf8(const std::u32string& text);

// `bytes` as UTF-8 with every maximal invalid subsequence replaced by U+FFFD,
// as Rust's String::from_utf8_lossy (and so Hugging Face tokenizers' decoding)
// does.
std::string Utf8Lossy(absl::string_view bytes);

// Length of the longest prefix of `bytes` that is complete UTF-8 or definitely
// invalid, i.e. everything except a trailing truncated-but-so-far-valid
// sequence (at most 3 bytes) that more bytes could complete.
size_t CompletePrefixLength(absl::string_view bytes);

// Unicode Normalization Form C (canonical composition).
std::string Nfc(absl::string_view text);

// GPT-2's byte-level alphabet: each byte 0..255 as a printable code point.
const std::vector<char32_t>& ByteToChar();

}  // namespace microrl::tokenizer

#endif  // MICRORL_COMMON_TOKENIZER_UNICODE_H_
