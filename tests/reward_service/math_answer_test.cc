#include "reward_service/math_answer.h"

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl::reward {
namespace {

using ::testing::HasSubstr;

bool Same(const std::string& reference, const std::string& answer) {
  const Comparison c = CompareAnswers(reference, answer);
  EXPECT_TRUE(c.equal || !c.reason.empty()) << "a difference needs a reason";
  return c.equal;
}

TEST(NormalizeLatexTest, StripsPresentationOnly) {
  EXPECT_EQ(NormalizeLatex("$\\left( \\dfrac{1}{2}, 3 \\right)$"),
            "( \\frac{1}{2}, 3 )");
  EXPECT_EQ(NormalizeLatex("\\$1{,}000.50"), "1000.50");
  EXPECT_EQ(NormalizeLatex("30^\\circ"), "30");
  EXPECT_EQ(NormalizeLatex("12\\text{ cm}^2"), "12");
  EXPECT_EQ(NormalizeLatex("\\text{Sunday}"), "Sunday");
  EXPECT_EQ(NormalizeLatex("5\\%"), "5%");
  EXPECT_EQ(NormalizeLatex("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
            "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}");
}

TEST(CompareAnswersTest, NumbersExactlyAndAsMathVerifyRoundsDecimals) {
  EXPECT_TRUE(Same("25", "025"));             // AIME's leading zeros
  EXPECT_TRUE(Same("\\frac{5}{2}", "2.50"));  // trailing zeros, exact rational
  EXPECT_TRUE(Same("0.125", "\\frac18"));  // \frac with one-character arguments
  EXPECT_TRUE(Same("\\frac{1}{3}", "0.333333"));
  EXPECT_FALSE(Same("\\frac{1}{3}", "0.33"));
  EXPECT_FALSE(
      Same(".0000672", ".0000673"));  // tiny values do not all round to 0
  EXPECT_TRUE(Same("1.5 \\times 10^{3}", "1500"));
  EXPECT_TRUE(Same("1500", "1.5e3"));
  EXPECT_TRUE(Same("1000", "1,000"));
  EXPECT_FALSE(Same("12", "13"));
  EXPECT_FALSE(Same("2", "-2"));
  EXPECT_FALSE(
      Same("2^{4950}", "2^{4951}"));  // too large for doubles: not equal
  EXPECT_TRUE(Same("-\\frac{3}{4}", "\\frac{-3}{4}"));
  EXPECT_TRUE(Same("\\frac{3}{-4}", "-0.75"));
}

TEST(CompareAnswersTest, RadicalsConstantsAndFunctions) {
  EXPECT_TRUE(Same("2\\sqrt{2}", "\\sqrt{8}"));
  EXPECT_TRUE(Same("\\sqrt[3]{-8}", "-2"));
  EXPECT_TRUE(Same("\\frac{\\sqrt{3}}{2}", "\\sin(\\pi/3)"));
  EXPECT_TRUE(Same("2\\pi", "\\pi \\cdot 2"));
  EXPECT_FALSE(Same("2\\pi", "2"));
  EXPECT_TRUE(Same("e^2", "\\exp(2)"));
  EXPECT_TRUE(Same("\\log_2 8", "3"));
  EXPECT_TRUE(Same("\\binom{5}{2}", "10"));
  EXPECT_TRUE(Same("5!", "120"));
  EXPECT_TRUE(Same("|-3|", "3"));
  EXPECT_TRUE(Same("1+2i", "2i+1"));
  EXPECT_FALSE(Same("1+2i", "1-2i"));
}

TEST(CompareAnswersTest, ExpressionsWithVariablesAtRandomPoints) {
  EXPECT_TRUE(Same("x^2+2x+1", "(x+1)^2"));
  EXPECT_TRUE(Same("\\frac{x}{2}", "0.5x"));
  EXPECT_FALSE(Same("x^2+2x+1", "(x-1)^2"));
  EXPECT_FALSE(Same("x+1", "y+1"));  // variables matter
  EXPECT_TRUE(Same("a_1 + a_{2}", "a_2+a_1"));
  EXPECT_TRUE(Same("x^23", "3x^2"));  // LaTeX exponents take one character
}

TEST(CompareAnswersTest, EquationsPlusMinusAndPercent) {
  EXPECT_TRUE(Same("5", "x = 5"));
  EXPECT_TRUE(Same("x=5", "5"));
  EXPECT_TRUE(Same("y = 2x + 1", "y = 1 + 2x"));
  EXPECT_TRUE(Same("y=2x+1", "2x - y + 1 = 0"));
  EXPECT_FALSE(Same("y = 2x + 1", "y = 2x - 1"));
  EXPECT_TRUE(Same("1 \\pm \\sqrt{2}", "1-\\sqrt2, 1+\\sqrt2"));
  EXPECT_TRUE(Same("50\\%", "50"));
  EXPECT_TRUE(Same("50\\%", "0.5"));
}

TEST(CompareAnswersTest, CollectionsIntervalsAndMatrices) {
  EXPECT_TRUE(Same("\\{1, 2, 3\\}", "\\{3,1,2\\}"));
  EXPECT_FALSE(Same("\\{1, 2, 3\\}", "\\{1, 2\\}"));
  EXPECT_TRUE(Same("1, 2", "2, 1"));  // several answers: any order
  EXPECT_TRUE(Same("(1, 2)", "(1,2)"));
  EXPECT_FALSE(Same("(1, 2)", "(2, 1)"));  // tuples keep their order
  EXPECT_TRUE(Same("[0, 1)", "\\left[0,1\\right)"));
  EXPECT_FALSE(Same("[0, 1)", "[0, 1]"));  // interval ends matter
  EXPECT_TRUE(Same("(0, 1)", "(0,1)"));
  EXPECT_TRUE(
      Same("(-\\infty, 0) \\cup (1, \\infty)", "(1,\\infty)\\cup(-\\infty,0)"));
  EXPECT_FALSE(Same("(-\\infty, 0) \\cup (1, \\infty)",
                    "(-\\infty, 0] \\cup (1, \\infty)"));
  EXPECT_TRUE(Same("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
                   "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"));
  EXPECT_FALSE(Same("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
                    "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}"));
  EXPECT_TRUE(Same("\\emptyset", "\\{\\}"));
}

TEST(CompareAnswersTest, TextAndMultipleChoice) {
  EXPECT_TRUE(Same("\\text{(C)}", "C"));
  EXPECT_TRUE(Same("\\text{Sunday}", "sunday"));
  EXPECT_FALSE(Same("\\text{odd}", "\\text{even}"));
  EXPECT_FALSE(Same("2+2i, 2-2i", "2-2i, 2-2i"));  // signs are never ignored
}

TEST(CompareAnswersTest, BoundedWorkAndReasons) {
  const Comparison long_answer = CompareAnswers("1", std::string(5000, '1'));
  EXPECT_FALSE(long_answer.equal);
  EXPECT_THAT(long_answer.reason, HasSubstr("longer than 1000 characters"));
  const Comparison deep =
      CompareAnswers("1", std::string(300, '(') + "1" + std::string(300, ')'));
  EXPECT_FALSE(deep.equal);
  EXPECT_THAT(deep.reason, HasSubstr("nested too deeply"));
  MathLimits limits;
  limits.max_steps = 50;
  const Comparison tiny_budget = CompareAnswers("x^2+2x+1", "(x+1)^2", limits);
  EXPECT_FALSE(tiny_budget.equal);
  EXPECT_THAT(tiny_budget.reason, HasSubstr("too much work"));
  limits = MathLimits();
  limits.deadline = absl::Now() - absl::Seconds(1);
  const Comparison late = CompareAnswers(
      "\\{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,"
      "27,28,29,30\\}",
      "\\{30,29,28,27,26,25,24,23,22,21,20,19,18,17,16,15,14,13,12,11,10,9,8,7,"
      "6,5,4,3,2,1\\}",
      limits);
  EXPECT_TRUE(late.timed_out);
  EXPECT_EQ(late.reason, "timeout");
  EXPECT_THAT(CompareAnswers("12", "13").reason,
              HasSubstr("answer 13 != reference 12"));
  EXPECT_THAT(CompareAnswers("12", "\\frac{").reason,
              HasSubstr("cannot parse the answer"));
  EXPECT_EQ(CompareAnswers("12", "").reason, "empty answer");
  EXPECT_EQ(CompareAnswers("2^{999999999}", "2^{999999999}").equal, true);
  EXPECT_FALSE(CompareAnswers("1", "10^{999999}!").equal);
}

}  // namespace
}  // namespace microrl::reward
