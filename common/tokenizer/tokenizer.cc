#include "common/tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <queue>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/logging.h"
#include "common/tokenizer/unicode.h"
#include "nlohmann/json.hpp"

namespace microrl::tokenizer {
namespace {

using nlohmann::json;

constexpr size_t kCacheCapacity = 50000;
constexpr size_t kMaxCachedPieceBytes = 128;

// GPT-2's pre-tokenizer regex, used by a ByteLevel pre-tokenizer with
// use_regex.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Oniguruma (which `tokenizers` uses) treats \s as Unicode White_Space, which
// includes U+0085; PCRE2 10.42's \s with UCP does not. Rewrites \s and \S so
// the pattern matches as it does there.
std::string OnigurumaWhitespace(absl::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (e == 'S' && !in_class) {
        out += "[^\\s\\x{85}]";
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^')
        out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']')
        out.push_back(pattern[++i]);
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

absl::Status Unsupported(absl::string_view source, const std::string& what) {
  return absl::UnimplementedError(absl::StrCat(source, ": ", what));
}

}  // namespace

// The pre-tokenizer's split regex, compiled once (PCRE2, UTF + Unicode
// properties, JIT when available). Thread-safe: matching uses per-call data.
class SplitRegex {
 public:
  static absl::StatusOr<std::unique_ptr<SplitRegex>> Compile(
      absl::string_view pattern) {
    const std::string rewritten = OnigurumaWhitespace(pattern);
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(
        reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
        PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(
          absl::StrCat("bad pre-tokenizer regex at offset ", offset, ": ",
                       reinterpret_cast<char*>(message)));
    }
    pcre2_jit_compile(code,
                      PCRE2_JIT_COMPLETE);  // falls back to the interpreter
    return std::unique_ptr<SplitRegex>(new SplitRegex(code));
  }
  ~SplitRegex() { pcre2_code_free(code_); }

  // Calls piece(text) for every match and every gap between matches, in order
  // (the "Isolated" split behaviour). A match that fails (a resource limit of
  // PCRE2, not "no match") is tried again without the JIT; if that fails too,
  // the rest of the text is one piece and the error goes to `error` (never
  // taken silently for the end of the input).
  template <typename Fn>
  void Split(absl::string_view text, Fn piece, absl::Status* error) const {
    pcre2_match_data* match =
        pcre2_match_data_create_from_pattern(code_, nullptr);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t start = 0;
    size_t emitted = 0;
    while (start <= text.size()) {
      int rc = pcre2_match(code_, subject, text.size(), start,
                           PCRE2_NO_UTF_CHECK, match, nullptr);
      if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
        rc = pcre2_match(code_, subject, text.size(), start,
                         PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, match, nullptr);
      }
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        if (error != nullptr && error->ok()) {
          *error = absl::ResourceExhaustedError(absl::StrCat(
              "the pre-tokenizer's regex failed at byte ", start, " of a ",
              text.size(), "-byte segment: ",
              reinterpret_cast<const char*>(message)));
        }
        break;
      }
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
      const size_t begin = ovector[0];
      const size_t end = ovector[1];
      if (begin > emitted) piece(text.substr(emitted, begin - emitted));
      if (end > begin) piece(text.substr(begin, end - begin));
      emitted = std::max(emitted, end);
      if (end == begin) {
        // Empty match: step over one character.
        if (begin >= text.size()) break;
        int length = ValidSequenceLength(text, begin);
        start = begin + (length > 0 ? length : 1);
      } else {
        start = end;
      }
    }
    if (emitted < text.size()) piece(text.substr(emitted));
    pcre2_match_data_free(match);
  }

 private:
  explicit SplitRegex(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
};

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(
    const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return FromJson(*text, path);
}

namespace {

// Ids at or above this are refused: the largest vocabularies in use hold about
// 262,000 tokens, and a hostile file must not make the id table huge.
constexpr int64_t kMaxTokenId = int64_t{1} << 22;

// An id as an int32_t, or -1 if it is not an integer in [0, kMaxTokenId).
int32_t ReadTokenId(const nlohmann::json& value) {
  if (!value.is_number_integer()) return -1;
  const int64_t id = value.get<int64_t>();
  return id >= 0 && id < kMaxTokenId ? static_cast<int32_t>(id) : -1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    absl::string_view text, absl::string_view source) {
  const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a JSON object"));
  }
  std::unique_ptr<Tokenizer> t(new Tokenizer);
  try {
    // --- model
    const json& model = root.at("model");
    if (model.value("type", "") != "BPE") {
      return Unsupported(source,
                         absl::StrCat("model type ", model.value("type", "?"),
                                      " is not supported (BPE)"));
    }
    if (model.value("byte_fallback", false))
      return Unsupported(source, "byte_fallback");
    if (!model.value("continuing_subword_prefix", json()).is_null() &&
        model["continuing_subword_prefix"] != "") {
      return Unsupported(source, "continuing_subword_prefix");
    }
    t->ignore_merges_ = model.value("ignore_merges", false);
    for (const auto& [token, id] : model.at("vocab").items()) {
      const int32_t value = ReadTokenId(id);
      if (value < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": vocabulary id of \"", token,
                         "\" is not an integer in [0, ", kMaxTokenId, ")"));
      }
      t->vocab_[token] = value;
      if (value >= static_cast<int32_t>(t->id_to_token_.size())) {
        t->id_to_token_.resize(value + 1);
        t->id_kind_.resize(value + 1, 0);
      }
      t->id_to_token_[value] = token;
      t->id_kind_[value] = 1;
    }
    int32_t rank = 0;
    for (const json& merge : model.at("merges")) {
      std::string left, right;
      if (merge.is_string()) {
        const std::string pair = merge.get<std::string>();
        const size_t space = pair.find(' ', 1);
        if (space == std::string::npos) {
          return absl::InvalidArgumentError(
              absl::StrCat(source, ": bad merge \"", pair, "\""));
        }
        left = pair.substr(0, space);
        right = pair.substr(space + 1);
      } else {
        left = merge.at(0).get<std::string>();
        right = merge.at(1).get<std::string>();
      }
      const auto l = t->vocab_.find(left), r = t->vocab_.find(right),
                 m = t->vocab_.find(left + right);
      if (l == t->vocab_.end() || r == t->vocab_.end() ||
          m == t->vocab_.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": merge \"", left, " ", right,
                         "\" uses tokens not in the vocabulary"));
      }
      const uint64_t key = (static_cast<uint64_t>(l->second) << 32) |
                           static_cast<uint32_t>(r->second);
      t->merges_.emplace(key,
                         Merge{rank++, m->second});  // first (best) rank wins
    }
    // --- byte-level alphabet
    t->char_ids_.resize(256);
    for (int b = 0; b < 256; ++b) {
      std::string spelling;
      AppendUtf8(ByteToChar()[b], &spelling);
      const auto it = t->vocab_.find(spelling);
      if (it == t->vocab_.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": not a byte-level vocabulary (no token for byte ", b,
            ")"));
      }
      t->char_ids_[b] = it->second;
    }
    // --- added tokens
    if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
      for (const json& added : root["added_tokens"]) {
        AddedToken token{added.at("content").get<std::string>(),
                         ReadTokenId(added.at("id")),
                         added.value("special", false)};
        for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
          if (added.value(flag, false)) {
            return Unsupported(source,
                               absl::StrCat("added token \"", token.content,
                                            "\" sets ", flag));
          }
        }
        if (token.content.empty() || token.id < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(source, ": bad added token"));
        }
        if (token.id >= static_cast<int32_t>(t->id_to_token_.size())) {
          t->id_to_token_.resize(token.id + 1);
          t->id_kind_.resize(token.id + 1, 0);
        }
        t->id_to_token_[token.id] = token.content;
        t->id_kind_[token.id] = token.special ? 3 : 2;
        Trie& trie = added.value("normalized", false) ? t->normalized_trie_
                                                      : t->raw_trie_;
        int node = 0;
        for (unsigned char c : token.content) {
          auto it = trie.next[node].find(c);
          if (it == trie.next[node].end()) {
            trie.next.emplace_back();
            trie.token.push_back(-1);
            it = trie.next[node]
                     .emplace(c, static_cast<int>(trie.next.size()) - 1)
                     .first;
          }
          node = it->second;
        }
        trie.token[node] = static_cast<int>(t->added_.size());
        t->added_.push_back(std::move(token));
      }
    }
    // --- normalizer: none or NFC (possibly inside a Sequence)
    const json normalizer = root.value("normalizer", json());
    if (!normalizer.is_null()) {
      std::vector<json> steps;
      if (normalizer.value("type", "") == "Sequence") {
        for (const json& step : normalizer.at("normalizers"))
          steps.push_back(step);
      } else {
        steps.push_back(normalizer);
      }
      for (const json& step : steps) {
        if (step.value("type", "") != "NFC") {
          return Unsupported(
              source, absl::StrCat("normalizer ", step.value("type", "?"),
                                   " is not supported (NFC)"));
        }
        t->nfc_ = true;
      }
    }
    // --- pre-tokenizer: Split(regex, Isolated) + ByteLevel, or
    // ByteLevel(use_regex)
    const json pre = root.value("pre_tokenizer", json());
    std::vector<json> steps;
    if (pre.is_object() && pre.value("type", "") == "Sequence") {
      for (const json& step : pre.at("pretokenizers")) steps.push_back(step);
    } else if (pre.is_object()) {
      steps.push_back(pre);
    }
    std::string pattern;
    bool byte_level = false;
    for (const json& step : steps) {
      const std::string type = step.value("type", "");
      if (type == "Split" && !byte_level && pattern.empty()) {
        if (!step.at("pattern").contains("Regex") ||
            step.value("behavior", "") != "Isolated" ||
            step.value("invert", false)) {
          return Unsupported(
              source, "a Split pre-tokenizer other than an isolating regex");
        }
        pattern = step["pattern"]["Regex"].get<std::string>();
      } else if (type == "ByteLevel" && !byte_level) {
        if (step.value("add_prefix_space", false)) {
          return Unsupported(source,
                             "a ByteLevel pre-tokenizer with add_prefix_space");
        }
        byte_level = true;
        if (step.value("use_regex", true)) {
          if (!pattern.empty()) return Unsupported(source, "two split regexes");
          pattern = kGpt2Pattern;
        }
      } else {
        return Unsupported(source,
                           absl::StrCat("pre-tokenizer ", type, " here"));
      }
    }
    if (!byte_level || pattern.empty()) {
      return Unsupported(source,
                         "only byte-level BPE with a split regex is supported");
    }
    absl::StatusOr<std::unique_ptr<SplitRegex>> split =
        SplitRegex::Compile(pattern);
    if (!split.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": ", split.status().message()));
    }
    t->split_ = *std::move(split);
    // --- decoder
    const json decoder = root.value("decoder", json());
    if (!decoder.is_object() || decoder.value("type", "") != "ByteLevel") {
      return Unsupported(source, "only a ByteLevel decoder is supported");
    }
    // --- post-processor: ByteLevel adds nothing; TemplateProcessing's single
    // template adds its special tokens around the sequence.
    std::vector<json> processors;
    const json post = root.value("post_processor", json());
    if (post.is_object() && post.value("type", "") == "Sequence") {
      for (const json& p : post.at("processors")) processors.push_back(p);
    } else if (post.is_object()) {
      processors.push_back(post);
    }
    for (const json& processor : processors) {
      const std::string type = processor.value("type", "");
      if (type == "ByteLevel") continue;
      if (type != "TemplateProcessing") {
        return Unsupported(source, absl::StrCat("post-processor ", type));
      }
      bool after = false;
      for (const json& item : processor.at("single")) {
        if (item.contains("Sequence")) {
          after = true;
          continue;
        }
        const std::string name =
            item.at("SpecialToken").at("id").get<std::string>();
        for (const json& id :
             processor.at("special_tokens").at(name).at("ids")) {
          const int32_t value = ReadTokenId(id);
          if (value < 0) {
            return absl::InvalidArgumentError(absl::StrCat(
                source, ": post-processor id is not an integer in [0, ",
                kMaxTokenId, ")"));
          }
          (after ? t->suffix_ids_ : t->prefix_ids_).push_back(value);
        }
      }
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
  for (const std::vector<int32_t>* ids : {&t->prefix_ids_, &t->suffix_ids_}) {
    for (int32_t id : *ids) {
      if (id >= static_cast<int32_t>(t->id_kind_.size()) ||
          t->id_kind_[id] == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": the post-processor adds id ", id,
                         ", which is no token of the vocabulary"));
      }
    }
  }
  // Bytes each token decodes to: the byte-level mapping of its characters, or,
  // for an added token with characters outside that alphabet, its own UTF-8.
  static const auto* char_to_byte = [] {
    auto* map = new std::unordered_map<char32_t, uint8_t>;
    for (int b = 0; b < 256; ++b)
      (*map)[ByteToChar()[b]] = static_cast<uint8_t>(b);
    return map;
  }();
  t->token_bytes_.resize(t->id_to_token_.size());
  for (size_t id = 0; id < t->id_to_token_.size(); ++id) {
    const std::string& spelling = t->id_to_token_[id];
    std::string bytes;
    bool mapped = true;
    for (char32_t c : DecodeUtf8(spelling)) {
      const auto it = char_to_byte->find(c);
      if (it == char_to_byte->end()) {
        mapped = false;
        break;
      }
      bytes.push_back(static_cast<char>(it->second));
    }
    t->token_bytes_[id] = mapped ? bytes : spelling;
  }
  return t;
}

template <typename SegmentFn>
void Tokenizer::SplitAdded(const Trie& trie, absl::string_view text,
                           std::vector<int32_t>* out, SegmentFn segment) const {
  if (trie.empty()) {
    segment(text);
    return;
  }
  size_t emitted = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    // Longest added token starting at pos.
    int node = 0;
    int best = -1;
    size_t best_length = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      const auto it = trie.next[node].find(static_cast<unsigned char>(text[i]));
      if (it == trie.next[node].end()) break;
      node = it->second;
      if (trie.token[node] >= 0) {
        best = trie.token[node];
        best_length = i - pos + 1;
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    if (pos > emitted) segment(text.substr(emitted, pos - emitted));
    out->push_back(added_[best].id);
    pos += best_length;
    emitted = pos;
  }
  if (emitted < text.size()) segment(text.substr(emitted));
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text,
                                       bool add_special_tokens) const {
  absl::Status error;
  std::vector<int32_t> out = Encode(text, add_special_tokens, &error);
  if (!error.ok()) MRL_LOG(ERROR) << "tokenizing: " << error;
  return out;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodeChecked(
    absl::string_view text, bool add_special_tokens) const {
  absl::Status error;
  std::vector<int32_t> out = Encode(text, add_special_tokens, &error);
  if (!error.ok()) return error;
  return out;
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text,
                                       bool add_special_tokens,
                                       absl::Status* error) const {
  std::vector<int32_t> out;
  if (add_special_tokens) out = prefix_ids_;
  std::string valid;
  if (!IsValidUtf8(text)) {
    valid = Utf8Lossy(text);
    text = valid;
  }
  SplitAdded(raw_trie_, text, &out, [&](absl::string_view segment) {
    if (!nfc_) {
      SplitAdded(normalized_trie_, segment, &out,
                 [&](absl::string_view part) {
                   EncodeSegment(part, &out, error);
                 });
      return;
    }
    const std::string normalized = Nfc(segment);
    SplitAdded(normalized_trie_, normalized, &out,
               [&](absl::string_view part) {
                 EncodeSegment(part, &out, error);
               });
  });
  if (add_special_tokens)
    out.insert(out.end(), suffix_ids_.begin(), suffix_ids_.end());
  return out;
}

void Tokenizer::EncodeSegment(absl::string_view segment,
                              std::vector<int32_t>* out,
                              absl::Status* error) const {
  split_->Split(
      segment, [&](absl::string_view piece) { EncodePiece(piece, out); },
      error);
}

void Tokenizer::EncodePiece(absl::string_view piece,
                            std::vector<int32_t>* out) const {
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  std::string key;
  if (cacheable) {
    key.assign(piece.data(), piece.size());
    std::lock_guard<std::mutex> lock(cache_mu_);
    const auto it = cache_.find(key);
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = Bpe(piece);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < kCacheCapacity)
      cache_.emplace(std::move(key), std::move(ids));
  }
}

std::vector<int32_t> Tokenizer::Bpe(absl::string_view piece) const {
  if (piece.size() == 1)
    return {char_ids_[static_cast<unsigned char>(piece[0])]};
  if (ignore_merges_) {
    std::string spelling;
    for (unsigned char b : piece) AppendUtf8(ByteToChar()[b], &spelling);
    const auto it = vocab_.find(spelling);
    if (it != vocab_.end()) return {it->second};
  }
  // Symbols in a doubly linked list; candidate merges in a heap ordered by
  // (rank, position), so equal-rank merges apply left to right.
  const int n = static_cast<int>(piece.size());
  std::vector<int32_t> id(n);
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    id[i] = char_ids_[static_cast<unsigned char>(piece[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  using Candidate =
      std::tuple<int32_t, int, int32_t, int32_t>;  // rank, left, ids
  std::priority_queue<Candidate, std::vector<Candidate>,
                      std::greater<Candidate>>
      heap;
  auto consider = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    const int right = next[left];
    const auto it = merges_.find((static_cast<uint64_t>(id[left]) << 32) |
                                 static_cast<uint32_t>(id[right]));
    if (it != merges_.end())
      heap.emplace(it->second.rank, left, id[left], id[right]);
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const auto [rank, left, left_id, right_id] = heap.top();
    heap.pop();
    const int right = next[left];
    // Stale if either side changed since the candidate was made.
    if (id[left] != left_id || right < 0 || id[right] != right_id) continue;
    const auto it = merges_.find((static_cast<uint64_t>(left_id) << 32) |
                                 static_cast<uint32_t>(right_id));
    id[left] = it->second.merged;
    id[right] = -1;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    consider(prev[left]);
    consider(left);
  }
  std::vector<int32_t> out;
  for (int i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
  return out;
}

std::string Tokenizer::TokenBytes(int32_t id, bool skip_special_tokens) const {
  if (id < 0 || id >= vocab_size() || id_kind_[id] == 0) return "";
  if (skip_special_tokens && id_kind_[id] == 3) return "";
  return token_bytes_[id];
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids,
                              bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) bytes += TokenBytes(id, skip_special_tokens);
  return Utf8Lossy(bytes);
}

int32_t Tokenizer::TokenToId(absl::string_view token) const {
  for (const AddedToken& added : added_) {
    if (added.content == token) return added.id;
  }
  const auto it = vocab_.find(std::string(token));
  return it == vocab_.end() ? -1 : it->second;
}

std::string Tokenizer::IdToToken(int32_t id) const {
  return id >= 0 && id < vocab_size() ? id_to_token_[id] : "";
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && id_kind_[id] == 3;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer,
                                       bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDecoder::Add(int32_t id) {
  pending_ += tokenizer_.TokenBytes(id, skip_special_tokens_);
  const size_t complete = CompletePrefixLength(pending_);
  std::string out = Utf8Lossy(absl::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out = Utf8Lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace microrl::tokenizer
