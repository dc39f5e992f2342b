#ifndef MICRORL_COMMON_TOKENIZER_TOKENIZER_H_
#define MICRORL_COMMON_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace microrl::tokenizer {

class SplitRegex;

// A byte-level BPE tokenizer read from a Hugging Face tokenizer.json
// (Qwen2/2.5/3, Llama-3.x, DeepSeek-R1-Distill), encoding and decoding exactly
// as the `tokenizers` library does:
//   1. added tokens (special or not) are cut out of the raw text first,
//      leftmost-longest;
//   2. each remaining segment is normalized (NFC, if the file says so) and
//   split
//      by the pre-tokenizer's regex (PCRE2, with Oniguruma's \s = Unicode
//      White_Space);
//   3. each piece is mapped to GPT-2's byte-level alphabet and merged by BPE
//      rank (with ignore_merges: a piece that is a vocabulary entry is one
//      token).
// Thread-safe: encoding shares a bounded cache of pieces under a mutex.
class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(
      const std::string& path);
  // `source` names the text in errors.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      absl::string_view json, absl::string_view source);
  ~Tokenizer();

  // Token ids of `text`. With `add_special_tokens`, the post-processor's tokens
  // (e.g. a BOS from TemplateProcessing) are added; byte-level post-processors
  // add none. Invalid UTF-8 in `text` is first replaced by U+FFFD.
  std::vector<int32_t> Encode(absl::string_view text,
                              bool add_special_tokens = false) const;
  // As Encode, but a failure of the pre-tokenizer's regex (a PCRE2 resource
  // limit on a pathological input) is an error (ResourceExhausted, saying
  // where) instead of a logged one with the rest of the text left unsplit.
  absl::StatusOr<std::vector<int32_t>> EncodeChecked(
      absl::string_view text, bool add_special_tokens = false) const;

  // The text of `ids` (lossy UTF-8, as `tokenizers` decodes). Unknown ids are
  // skipped. With `skip_special_tokens`, added tokens marked special are left
  // out.
  std::string Decode(const std::vector<int32_t>& ids,
                     bool skip_special_tokens = false) const;

  // The bytes one token stands for (not necessarily valid UTF-8 on its own);
  // empty for an unknown id or a skipped special token.
  std::string TokenBytes(int32_t id, bool skip_special_tokens = false) const;

  // -1 if `token` (in the vocabulary's own spelling, or an added token's
  // content) is unknown.
  int32_t TokenToId(absl::string_view token) const;
  // The vocabulary spelling of `id` ("Ġhello"), or "" if unknown.
  std::string IdToToken(int32_t id) const;
  bool IsSpecial(int32_t id) const;
  // One more than the largest id (vocabulary and added tokens).
  int32_t vocab_size() const {
    return static_cast<int32_t>(id_to_token_.size());
  }

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
  };
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  // A byte trie over added tokens' contents, for leftmost-longest matching.
  struct Trie {
    std::vector<std::unordered_map<unsigned char, int>> next{
        1};  // node -> byte -> node
    std::vector<int> token{
        -1};  // node -> index into added_ when a token ends there
    bool empty() const { return next.size() == 1; }
  };

  Tokenizer();
  std::vector<int32_t> Encode(absl::string_view text, bool add_special_tokens,
                              absl::Status* error) const;
  void EncodeSegment(absl::string_view segment, std::vector<int32_t>* out,
                     absl::Status* error) const;
  void EncodePiece(absl::string_view piece, std::vector<int32_t>* out) const;
  std::vector<int32_t> Bpe(absl::string_view piece) const;
  // Cuts added tokens of `trie` out of `text`: ids of matches go to `out`, the
  // text between them to `segment` (called in order).
  template <typename SegmentFn>
  void SplitAdded(const Trie& trie, absl::string_view text,
                  std::vector<int32_t>* out, SegmentFn segment) const;

  std::unordered_map<std::string, int32_t> vocab_;  // byte-level spelling -> id
  std::vector<std::string> id_to_token_;  // id -> spelling ("" if none)
  std::vector<int8_t> id_kind_;           // 0 none, 1 vocab, 2 added, 3 special
  std::unordered_map<uint64_t, Merge>
      merges_;  // (left id << 32 | right id) -> merge
  std::vector<AddedToken> added_;
  Trie raw_trie_;         // added tokens matched before normalization
  Trie normalized_trie_;  // added tokens with "normalized": true, matched after
                          // it
  std::vector<int32_t> char_ids_;  // byte -> id of its byte-level character
  std::vector<std::string> token_bytes_;  // id -> the bytes it decodes to
  bool nfc_ = false;
  bool ignore_merges_ = false;
  std::unique_ptr<SplitRegex> split_;
  std::vector<int32_t> prefix_ids_;  // post-processor: added before / after
  std::vector<int32_t> suffix_ids_;

  // Encoded pieces (raw bytes -> ids); stops growing when full, as the
  // `tokenizers` cache does.
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>>
      cache_;  // guarded by cache_mu_
};

// Decodes a stream of token ids to text, never emitting part of a UTF-8
// character: bytes of an incomplete character wait for the next token. The
// concatenation of everything returned equals Tokenizer::Decode of all ids. Not
// thread-safe; one per stream.
class IncrementalDecoder {
 public:
  IncrementalDecoder(const Tokenizer& tokenizer,
                     bool skip_special_tokens = false);

  // Text completed by `id` (possibly empty).
  std::string Add(int32_t id);
  // Whatever is left at the end of the stream (incomplete bytes become U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  const bool skip_special_tokens_;
  std::string pending_;  // bytes not yet emitted (< 4, an incomplete character)
};

}  // namespace microrl::tokenizer

#endif  // MICRORL_COMMON_TOKENIZER_TOKENIZER_H_
