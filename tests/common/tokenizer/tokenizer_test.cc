#include "common/tokenizer/tokenizer.h"

#include <fstream>
#include <random>

#include "common/tokenizer/unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace microrl::tokenizer {
namespace {

using ::testing::HasSubstr;

std::string Shared(const std::string& path) {
  return std::string(MICRORL_SHARED_DIR) + "/" + path;
}

// The golden files made with Hugging Face tokenizers (see their README): ids of
// every text, and its decoding.
void CheckGolden(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::FromFile(Shared("tokenizers/" + name + "/tokenizer.json"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::ifstream in(Shared("tokenizers/golden_" + name + ".jsonl"));
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    const nlohmann::json golden = nlohmann::json::parse(line);
    const std::string text = golden["text"];
    const std::vector<int32_t> expected = golden["ids"];
    EXPECT_EQ((*tokenizer)->Encode(text), expected) << golden["id"];
    const std::string decoded = golden.value("decoded", text);
    EXPECT_EQ((*tokenizer)->Decode(expected), decoded) << golden["id"];
    ++cases;
  }
  EXPECT_EQ(cases, 302);
}

TEST(TokenizerTest, MatchesQwen3Goldens) { CheckGolden("qwen3"); }
TEST(TokenizerTest, MatchesLlama3Goldens) { CheckGolden("llama3"); }

TEST(TokenizerTest, SpecialTokensAndLookups) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> qwen =
      Tokenizer::FromFile(Shared("tokenizers/qwen3/tokenizer.json"));
  ASSERT_TRUE(qwen.ok());
  const Tokenizer& t = **qwen;
  EXPECT_EQ(t.Encode("Hello world"), (std::vector<int32_t>{9707, 1879}));
  EXPECT_EQ(t.TokenToId("<|im_end|>"), 151645);
  EXPECT_TRUE(t.IsSpecial(151645));
  EXPECT_FALSE(t.IsSpecial(t.TokenToId("<think>")));  // added, not special
  EXPECT_EQ(t.IdToToken(1879), "\xC4\xA0world");      // "Ġworld"
  EXPECT_EQ(t.vocab_size(), 151669);
  const std::vector<int32_t> ids = t.Encode("<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_EQ(t.Decode(ids), "<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(t.Decode(ids, /*skip_special_tokens=*/true), "user\nhi");
  EXPECT_EQ(t.Encode("x", /*add_special_tokens=*/true),
            t.Encode("x"));  // no BOS for Qwen
  // Invalid UTF-8 in is treated as U+FFFD.
  EXPECT_EQ(t.Encode("a\xFF"), t.Encode("a\xEF\xBF\xBD"));
}

TEST(IncrementalDecoderTest,
     ConcatenationEqualsDecodeAndNeverSplitsACharacter) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> llama =
      Tokenizer::FromFile(Shared("tokenizers/llama3/tokenizer.json"));
  ASSERT_TRUE(llama.ok());
  std::mt19937 rng(7);
  // Real text with multi-byte characters split across tokens, and random ids
  // (which produce invalid byte sequences too).
  std::vector<std::vector<int32_t>> streams = {(*llama)->Encode(
      "数学 😀👍🏽 émigré — ∑_{i=1}^n i² = n(n+1)(2n+1)/6 ✓")};
  std::uniform_int_distribution<int32_t> id(0, 127999);
  for (int s = 0; s < 200; ++s) {
    std::vector<int32_t> ids(1 + s % 40);
    for (int32_t& x : ids) x = id(rng);
    streams.push_back(ids);
  }
  for (const std::vector<int32_t>& ids : streams) {
    IncrementalDecoder decoder(**llama);
    std::string streamed;
    for (int32_t x : ids) {
      const std::string piece = decoder.Add(x);
      EXPECT_TRUE(IsValidUtf8(piece));
      streamed += piece;
    }
    streamed += decoder.Flush();
    EXPECT_EQ(streamed, (*llama)->Decode(ids));
  }
}

TEST(UnicodeTest, LossyDecodingReplacesMaximalInvalidSubsequences) {
  EXPECT_EQ(Utf8Lossy("ok"), "ok");
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(Utf8Lossy("\xE2\x82"), fffd);  // truncated: one replacement
  EXPECT_EQ(Utf8Lossy("\xE2\x82x"), fffd + "x");
  EXPECT_EQ(Utf8Lossy("\xC0\xAF"), fffd + fffd);  // overlong: each byte
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogate
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(CompletePrefixLength("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(CompletePrefixLength("ab\xF0\x9F\x98\x80"), 6u);
  EXPECT_EQ(CompletePrefixLength("ab\xFF"), 3u);  // invalid, not incomplete
  EXPECT_EQ(Nfc("e\xCC\x81"), "\xC3\xA9");        // e + combining acute -> é
}

TEST(TokenizerTest, RefusesWhatItCannotReproduce) {
  struct Case {
    std::string json;
    std::string message;
  };
  const std::string vocab = R"("vocab": {"a": 0}, "merges": [])";
  const std::vector<Case> cases = {
      {"{", "not a JSON object"},
      {R"({"model": {"type": "Unigram"}})",
       "model type Unigram is not supported"},
      {R"({"model": {"type": "BPE", "byte_fallback": true}})", "byte_fallback"},
      {R"({"model": {"type": "BPE", )" + vocab + "}}",
       "not a byte-level vocabulary"},
  };
  for (const Case& c : cases) {
    const absl::Status status =
        Tokenizer::FromJson(c.json, "tok.json").status();
    EXPECT_FALSE(status.ok()) << c.json;
    EXPECT_THAT(std::string(status.message()), HasSubstr("tok.json")) << c.json;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << status;
  }
  EXPECT_EQ(Tokenizer::FromFile("/nonexistent/tokenizer.json").status().code(),
            absl::StatusCode::kNotFound);
}

// A complete small byte-level tokenizer.json, with a TemplateProcessing
// post-processor and flags `tokenizers` has but microrl does not reproduce.
std::string SmallTokenizer(const std::string& added_flags,
                           const std::string& post_processor) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    std::string spelling;
    AppendUtf8(ByteToChar()[b], &spelling);
    vocab[spelling] = b;
  }
  vocab["ab"] = 256;
  nlohmann::json root = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"added_tokens", {{{"id", 257}, {"content", "<s>"}, {"special", true}}}},
  };
  if (!added_flags.empty()) root["added_tokens"][0][added_flags] = true;
  if (!post_processor.empty())
    root["post_processor"] = nlohmann::json::parse(post_processor);
  return root.dump();
}

// A pre-tokenizer regex that PCRE2 gives up on (its match limit, here by
// catastrophic backtracking) is an error of EncodeChecked, not the silent end
// of the input.
TEST(TokenizerTest, ARegexThatFailsIsAnErrorNotTheEndOfTheInput) {
  nlohmann::json root = nlohmann::json::parse(SmallTokenizer("", ""));
  root["pre_tokenizer"] = nlohmann::json::parse(R"({"type": "Sequence",
      "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(a+)+b"}, "behavior": "Isolated",
         "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})");
  absl::StatusOr<std::unique_ptr<Tokenizer>> t =
      Tokenizer::FromJson(root.dump(), "redos");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->EncodeChecked("aab cab").ok());
  const std::string hostile = std::string(40, 'a') + "cb";
  const absl::StatusOr<std::vector<int32_t>> ids =
      (*t)->EncodeChecked(hostile);
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(ids.status().message()),
              HasSubstr("pre-tokenizer's regex failed at byte 0"));
  // Encode still answers (the rest unsplit, the error logged).
  EXPECT_FALSE((*t)->Encode(hostile).empty());
}

TEST(TokenizerTest, TemplateProcessingAddsBosAndUnsupportedFlagsAreRefused) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t =
      Tokenizer::FromJson(SmallTokenizer("", R"({"type": "TemplateProcessing",
          "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}}],
          "special_tokens": {"<s>": {"id": "<s>", "ids": [257], "tokens": ["<s>"]}}})"),
                          "small");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("ab"), (std::vector<int32_t>{256}));
  EXPECT_EQ((*t)->Encode("ab", /*add_special_tokens=*/true),
            (std::vector<int32_t>{257, 256}));
  EXPECT_EQ((*t)->Decode({257, 256, 99}), "<s>abc");
  const absl::Status lstrip =
      Tokenizer::FromJson(SmallTokenizer("lstrip", ""), "small").status();
  EXPECT_EQ(lstrip.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(lstrip.message()), HasSubstr("sets lstrip"));
}

}  // namespace
}  // namespace microrl::tokenizer
