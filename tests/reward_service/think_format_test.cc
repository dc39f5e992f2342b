#include "reward_service/think_format.h"

#include "gtest/gtest.h"

namespace microrl::reward {
namespace {

TEST(ThinkFormatTest, WellFormedCompletion) {
  const ThinkLayout layout =
      AnalyzeThink("<|im_start|>assistant\n",
                   "<think>\nreasoning\n</think>\n\nSo \\boxed{4}.");
  EXPECT_TRUE(layout.well_formed) << layout.problem;
  EXPECT_EQ(layout.answer_region, "\n\nSo \\boxed{4}.");
}

TEST(ThinkFormatTest, PromptThatOpensTheThought) {
  // DeepSeek-R1-Distill: the generation prompt ends with "<think>\n".
  const std::string prompt = "<｜User｜>2+2?<｜Assistant｜><think>\n";
  EXPECT_TRUE(PromptOpensThink(prompt));
  EXPECT_TRUE(
      AnalyzeThink(prompt, "reasoning\n</think>\n\\boxed{4}").well_formed);
  EXPECT_FALSE(
      AnalyzeThink(prompt, "<think>again</think>\\boxed{4}").well_formed);
  EXPECT_FALSE(PromptOpensThink("<think>done</think> next"));
}

TEST(ThinkFormatTest, RejectsBadLayouts) {
  struct Case {
    const char* completion;
    const char* problem;
  };
  for (const Case& c :
       {Case{"no tags \\boxed{1}", "no <think>...</think> block"},
        Case{"<think>never closed \\boxed{1}", "never closed"},
        Case{"<think>a</think><think>b</think>\\boxed{1}", "repeated"},
        Case{"<think>a<think>b</think></think>\\boxed{1}", "repeated"},
        Case{"preamble <think>a</think>\\boxed{1}", "text before <think>"},
        Case{"<think>a</think>   ", "nothing after </think>"}}) {
    const ThinkLayout layout = AnalyzeThink("", c.completion);
    EXPECT_FALSE(layout.well_formed) << c.completion;
    EXPECT_NE(layout.problem.find(c.problem), std::string::npos)
        << layout.problem;
  }
  // An answer inside a thought that never closes does not count.
  EXPECT_EQ(AnalyzeThink("", "<think>\\boxed{1}").answer_region, "");
  // Without any think block the whole completion may hold the answer.
  EXPECT_EQ(AnalyzeThink("", "\\boxed{1}").answer_region, "\\boxed{1}");
}

}  // namespace
}  // namespace microrl::reward
