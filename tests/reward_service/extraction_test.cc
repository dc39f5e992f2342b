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
  EXPECT_EQ(ExtractAnswer("", options), std::nullopt);
  ExtractionOptions boxed_only;
  boxed_only.fallback_phrases.clear();
  EXPECT_EQ(ExtractAnswer("The final answer is 17", boxed_only), std::nullopt);
  EXPECT_EQ(ExtractAnswer("\\frac{1}{2}", boxed_only), "\\frac{1}{2}");
}

}  // namespace
}  // namespace microrl::reward

namespace microrl::reward {
namespace {

std::string Source(const std::string& text) {
  std::optional<ExtractedAnswer> found = FindAnswer(text, ExtractionOptions());
  return found ? std::string(AnswerSourceName(found->source)) + ":" + found->text
               : "none";
}

TEST(FindAnswerTest, RulesInTheirOrder) {
  // 1. Boxes, with the boxes joined to the last one as one list.
  EXPECT_EQ(Source("so $x = 3$, hence \\boxed{4}"), "boxed:4");
  EXPECT_EQ(Source("$\\boxed{1}, \\boxed{2}, \\boxed{3}$"), "boxed:1, 2, 3");
  // Joined by a word: the list is "1 and 2 and 3" (unordered).
  EXPECT_EQ(Source("$\\boxed{1}, \\boxed{2}$ and $\\boxed{3}$"),
            "boxed:1 and 2 and 3");
  EXPECT_EQ(Source("first \\boxed{1}. After checking the work again we get "
                   "\\boxed{2}"),
            "boxed:2");
  // A final answer stated after the last box wins over the box.
  EXPECT_EQ(Source("so \\boxed{200}. In total $10,455$. Final Answer: The "
                   "final answer is $10,455$. I hope it is correct."),
            "phrase:10,455");
  // 2. A bare answer is taken whole.
  EXPECT_EQ(Source("x = 5"), "whole:x = 5");
  EXPECT_EQ(Source("$y = 2x + 1$"), "whole:y = 2x + 1");
  EXPECT_EQ(Source("10\\text{ cm}"), "whole:10\\text{ cm}");
  // 3. Answer phrases: the math after them, else the rest of the sentence.
  EXPECT_EQ(Source("Answer $ 9 $"), "phrase:9");
  EXPECT_EQ(Source("Final answer: 42"), "phrase:42");
  EXPECT_EQ(Source("We get $7$. The final answer is $8$. I hope it is right."),
            "phrase:8");
  EXPECT_EQ(Source("The answer is 5 apples."), "phrase:5");
  EXPECT_EQ(Source("The answer is (C)."), "phrase:(C)");
  EXPECT_EQ(Source("I answered $3$ first, then found $x=4$."), "math:x=4");
  // 4. The last display or inline math, joined with the math right before it.
  EXPECT_EQ(Source("Therefore $x \\geq 5$ is the solution."),
            "math:x \\geq 5");
  EXPECT_EQ(Source("so \\[ \\frac{1}{2} \\] it is"), "math:\\frac{1}{2}");
  EXPECT_EQ(Source("The roots are $1$, $2$ and $3$."), "math:1, 2 and 3");
  // The last math and the last plain number: whichever ends last.
  EXPECT_EQ(Source("We set $d = 90/n$. So there are 12 sequences."),
            "number:12");
  EXPECT_EQ(Source("The result is $3$"), "math:3");
  // 5. The right-hand side of the last '=' of the last sentence.
  EXPECT_EQ(Source("First x = 2. So 3 + 4 = 7"), "equals:7");
  // 6. The last number-like expression of plain text.
  EXPECT_EQ(Source("so the total is 1,000.5 dollars"), "number:1000.5");
  EXPECT_EQ(Source("The number is 6.022e23 atoms"), "number:6.022e23");
  EXPECT_EQ(Source("about 3 \\times 10^{8} meters per second"),
            "number:3\\times10^{8}");
  EXPECT_EQ(Source("It is 28 percent of them"), "number:28%");
  EXPECT_EQ(Source("AZYUK2A"), "text:AZYUK2A");  // not a number in a word
  // 7. A short text.
  EXPECT_EQ(Source("Sunday"), "text:Sunday");
  EXPECT_EQ(Source(""), "none");
}

TEST(FindAnswerTest, LongCompletionsAreSearchedFromTheEnd) {
  std::string text(200'000, 'a');
  for (size_t i = 80; i < text.size(); i += 81) text[i] = '\n';
  text += "\nThus the answer is $\\frac{3}{4}$.";
  EXPECT_EQ(Source(text), "phrase:\\frac{3}{4}");
  EXPECT_EQ(Source(std::string(100'000, '$')), "none");
}

TEST(FindAnswerTest, InlineMathDoesNotSpanLinesButDisplayMathDoes) {
  EXPECT_EQ(Source("we have \\[\n 9 \n\\] here"), "math:9");
  EXPECT_EQ(Source("we have $x = 2$ and\n$y\n= 9$"), "equals:9");
}

TEST(TrailingBoxesTest, OnlyBoxesJoinedBySeparators) {
  EXPECT_EQ(TrailingBoxes("\\boxed{1}, \\boxed{2} or \\boxed{3}"),
            (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(TrailingBoxes("\\boxed{1} papers and \\boxed{2} bins"),
            (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(TrailingBoxes("\\boxed{1} at first, but after checking every single case and "
                          "every sign once more, the answer must be \\boxed{2}"),
            (std::vector<std::string>{"2"}));
  EXPECT_EQ(TrailingBoxes("\\boxed{3} so \\boxed{3}"),
            (std::vector<std::string>{"3"}));
  EXPECT_TRUE(TrailingBoxes("no box").empty());
}

}  // namespace
}  // namespace microrl::reward
