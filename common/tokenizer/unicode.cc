#include "common/tokenizer/unicode.h"

#include <utf8proc.h>

#include <cstdlib>

namespace microrl::tokenizer {

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// Per the Unicode standard (table 3-7): the range of the second byte depends on
// the first. Returns the sequence length for a lead byte (0 if invalid) and
// sets the allowed range of the second byte.
int LeadLength(uint8_t lead, uint8_t* low, uint8_t* high) {
  *low = 0x80;
  *high = 0xBF;
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) {
    if (lead == 0xE0) *low = 0xA0;
    if (lead == 0xED) *high = 0x9F;
    return 3;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    if (lead == 0xF0) *low = 0x90;
    if (lead == 0xF4) *high = 0x8F;
    return 4;
  }
  return 0;
}

// How many bytes from `pos` form a valid prefix of a sequence (may be the whole
// sequence); sets *full to the sequence's full length (0 for an invalid lead).
size_t ValidPrefix(absl::string_view text, size_t pos, int* full) {
  uint8_t low, high;
  const auto lead = static_cast<uint8_t>(text[pos]);
  *full = LeadLength(lead, &low, &high);
  if (*full == 0) return 0;
  size_t n = 1;
  while (n < static_cast<size_t>(*full) && pos + n < text.size()) {
    const auto byte = static_cast<uint8_t>(text[pos + n]);
    if (byte < low || byte > high) break;
    low = 0x80;
    high = 0xBF;
    ++n;
  }
  return n;
}

}  // namespace

int ValidSequenceLength(absl::string_view text, size_t pos) {
  int full = 0;
  const size_t n = ValidPrefix(text, pos, &full);
  return full != 0 && n == static_cast<size_t>(full) ? full : 0;
}

bool IsValidUtf8(absl::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const int length = ValidSequenceLength(text, pos);
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

std::u32string DecodeUtf8(absl::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const int length = ValidSequenceLength(text, pos);
    if (length == 0) {
      out.push_back(0xFFFD);
      ++pos;
      continue;
    }
    const auto* p = reinterpret_cast<const uint8_t*>(text.data() + pos);
    char32_t cp = length == 1 ? p[0] : p[0] & (0x7F >> length);
    for (int i = 1; i < length; ++i) cp = (cp << 6) | (p[i] & 0x3F);
    out.push_back(cp);
    pos += length;
  }
  return out;
}

std::string EncodeUtf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text) AppendUtf8(cp, &out);
  return out;
}

std::string Utf8Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    int full = 0;
    const size_t n = ValidPrefix(bytes, pos, &full);
    if (full != 0 && n == static_cast<size_t>(full)) {
      out.append(bytes.data() + pos, n);
      pos += n;
    } else {
      // A maximal invalid subsequence: the longest valid prefix of a sequence
      // (or one byte), replaced by one U+FFFD.
      out.append("\xEF\xBF\xBD");
      pos += n == 0 ? 1 : n;
    }
  }
  return out;
}

size_t CompletePrefixLength(absl::string_view bytes) {
  // A truncated sequence can only be among the last 3 bytes.
  const size_t start = bytes.size() > 3 ? bytes.size() - 3 : 0;
  for (size_t pos = start; pos < bytes.size(); ++pos) {
    const auto byte = static_cast<uint8_t>(bytes[pos]);
    if ((byte & 0xC0) == 0x80) continue;  // continuation: not a sequence start
    int full = 0;
    const size_t n = ValidPrefix(bytes, pos, &full);
    if (full > 1 && pos + n == bytes.size() && n < static_cast<size_t>(full))
      return pos;
  }
  return bytes.size();
}

std::string Nfc(absl::string_view text) {
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t length = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
      static_cast<utf8proc_ssize_t>(text.size()), &result,
      static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (length < 0) return std::string(text);  // invalid UTF-8: leave as is
  std::string out(reinterpret_cast<char*>(result), static_cast<size_t>(length));
  std::free(result);
  return out;
}

const std::vector<char32_t>& ByteToChar() {
  static const std::vector<char32_t>* table = [] {
    auto* map = new std::vector<char32_t>(256);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') ||
                             (b >= 0xA1 && b <= 0xAC) ||
                             (b >= 0xAE && b <= 0xFF);
      (*map)[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return map;
  }();
  return *table;
}

}  // namespace microrl::tokenizer
