#include "reward_service/extraction.h"

#include "gtest/gtest.h"

namespace microrl::reward {
namespace {

TEST(LastBoxedTest, FindsTheLastBoxWithNestedBraces) {
  EXPECT_EQ(LastBoxed("a \\boxed{1} b \\boxed{\\frac{1}{2}}"), "\\frac{1}{2}");
  EXPECT_EQ(LastBoxed("\\boxed{\\{1, 2\\}}"), "\\{1, 2\\}");
  EXPECT_EQ(LastBoxed("so \\boxed 42 is it"), "42");
  EXPECT_EQ(LastBoxed("\\fbox{7}"), "7");
  EXPECT_EQ(LastBoxed("\\boxed{1} then \\fbox{2}"), "2");
  EXPECT_EQ(LastBoxed("\\boxed{unclosed"), std::nullopt);
  EXPECT_EQ(LastBoxed("no box here"), std::nullopt);
  EXPECT_EQ(LastBoxed("\\boxedx{3}"), std::nullopt);
}

TEST(ExtractAnswerTest, WrappersAndFallbacks) {
  const ExtractionOptions options;
  EXPECT_EQ(ExtractAnswer("Thus $\\boxed{3}$.", options), "3");
  EXPECT_EQ(ExtractAnswer("\\boxed{$x=2$}", options), "x=2");
  EXPECT_EQ(StripMathDelimiters("  \\( \\frac12 \\) "), "\\frac12");
  EXPECT_EQ(StripMathDelimiters("$$5$$"), "5");
  EXPECT_EQ(ExtractAnswer("Work...\nThe final answer is $17$.\n", options),
            "17");
  EXPECT_EQ(ExtractAnswer("The answer is: 3.5.", options), "3.5");
  EXPECT_EQ(ExtractAnswer("nothing to see", options), std::nullopt);
  ExtractionOptions boxed_only;
  boxed_only.fallback_phrases.clear();
  EXPECT_EQ(ExtractAnswer("The final answer is 17", boxed_only), std::nullopt);
}

}  // namespace
}  // namespace microrl::reward
