// Request validation without a model: each bound refuses with a message that
// names it, and the limits of the request are the ones given.
#include "rollout_server/request_validation.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl::rollout {
namespace {

using ::testing::HasSubstr;

RequestLimits Limits() {
  RequestLimits limits;
  limits.vocab_size = 100;
  limits.max_model_len = 16;
  limits.max_group_size = 8;
  limits.has_tokenizer = true;
  return limits;
}

GenerationRequest Good() {
  GenerationRequest request;
  request.prompts = {{1, 2, 3}, {4}};
  request.group_size = 4;
  request.sampling.max_tokens = 8;
  return request;
}

std::string Error(const GenerationRequest& request,
                  const RequestLimits& limits = Limits()) {
  const absl::Status status = ValidateRequest(request, limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  return std::string(status.message());
}

TEST(ValidateRequestTest, AcceptsAGoodRequest) {
  EXPECT_TRUE(ValidateRequest(Good(), Limits()).ok());
}

TEST(ValidateRequestTest, PromptsAndGroups) {
  GenerationRequest r = Good();
  r.prompts.clear();
  EXPECT_THAT(Error(r), HasSubstr("no prompts"));
  r = Good();
  r.prompts.assign(kMaxPrompts + 1, {1});
  EXPECT_THAT(Error(r), HasSubstr("at most 4096"));
  r = Good();
  r.group_size = 9;
  EXPECT_THAT(Error(r), HasSubstr("group_size 9 is outside [1, 8]"));
  r.group_size = 0;
  EXPECT_THAT(Error(r), HasSubstr("group_size 0"));
  RequestLimits wide = Limits();
  wide.max_group_size = 1 << 20;
  r = Good();
  r.prompts.assign(4096, {1});
  r.group_size = 17;
  EXPECT_THAT(Error(r, wide), HasSubstr("completions; at most 65536"));
  r = Good();
  r.prompts[1].clear();
  EXPECT_THAT(Error(r), HasSubstr("prompt 1 is empty"));
  r = Good();
  r.prompts[0][2] = 100;
  EXPECT_THAT(Error(r), HasSubstr("prompt 0, token 2: id 100"));
}

TEST(ValidateRequestTest, LengthsAgainstMaxModelLen) {
  GenerationRequest r = Good();
  r.prompts[0].assign(16, 1);
  EXPECT_THAT(Error(r), HasSubstr("leaving no room for a completion"));
  r = Good();
  r.sampling.max_tokens = 14;  // 3 + 14 > 16
  EXPECT_THAT(Error(r), HasSubstr("exceeds max_model_len 16"));
  r.sampling.max_tokens = 13;
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
}

TEST(ValidateRequestTest, Sampling) {
  GenerationRequest r = Good();
  r.sampling.temperature = -1;
  EXPECT_THAT(Error(r), HasSubstr("temperature"));
  r = Good();
  r.sampling.top_p = 0;
  EXPECT_THAT(Error(r), HasSubstr("top_p"));
  r = Good();
  r.sampling.max_tokens = -1;
  EXPECT_THAT(Error(r), HasSubstr("max_tokens must be >= 0"));
  r = Good();
  r.sampling.top_logprobs = kMaxTopLogprobs + 1;
  EXPECT_THAT(Error(r), HasSubstr("top_logprobs must be in [0, 20]"));
  r.sampling.top_logprobs = -1;
  EXPECT_THAT(Error(r), HasSubstr("top_logprobs"));
}

TEST(ValidateRequestTest, StopConditions) {
  GenerationRequest r = Good();
  r.sampling.stop_token_ids.assign(kMaxStopTokenIds + 1, 1);
  EXPECT_THAT(Error(r), HasSubstr("stop token ids; at most"));
  r = Good();
  r.sampling.stop_token_ids = {-1};
  EXPECT_THAT(Error(r), HasSubstr("stop token id -1"));
  r = Good();
  r.sampling.stop_strings = {""};
  EXPECT_THAT(Error(r), HasSubstr("1 to 256 bytes"));
  r.sampling.stop_strings.assign(kMaxStopStrings + 1, "x");
  EXPECT_THAT(Error(r), HasSubstr("stop strings; at most"));
  r.sampling.stop_strings = {"x"};
  RequestLimits no_tokenizer = Limits();
  no_tokenizer.has_tokenizer = false;
  EXPECT_THAT(Error(r, no_tokenizer), HasSubstr("need a tokenizer"));
}

}  // namespace
}  // namespace microrl::rollout
