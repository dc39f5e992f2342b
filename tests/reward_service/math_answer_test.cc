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
  // A bare list is ordered unless the reference joins it with "and"/"or" or
  // a side writes a set.
  EXPECT_FALSE(Same("1, 2", "2, 1"));
  EXPECT_FALSE(Same("10, 4, -2", "4, 10, -2"));
  EXPECT_TRUE(Same("1 and 2", "2, 1"));
  EXPECT_TRUE(Same("1 or 2", "2 or 1"));
  EXPECT_TRUE(Same("1, 2", "\\{2, 1\\}"));
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

namespace microrl::reward {
namespace {

// The classes of issue 16, each as the reference and a prediction (bare
// answers here; the scorer tests put them in completions).
TEST(CompareAnswersTest, InequalitiesAndRelations) {
  EXPECT_TRUE(Same("x \\geq 5", "x >= 5"));
  EXPECT_TRUE(Same("x \\geq 5", "5 \\le x"));
  EXPECT_TRUE(Same("x < 1", "-x > -1"));
  EXPECT_FALSE(Same("x < 1", "-x < -1"));
  EXPECT_FALSE(Same("x < 1", "x \\leq 1"));
  // An inequality reference is answered by an equivalent set; a set
  // reference is not answered by an inequality (math-verify's default).
  EXPECT_TRUE(Same("x \\geq 5", "[5, \\infty)"));
  EXPECT_FALSE(Same("x > 5", "[5, \\infty)"));
  EXPECT_TRUE(Same("0 < x < 1", "(0, 1)"));
  EXPECT_FALSE(Same("[5, \\infty)", "x \\geq 5"));
  EXPECT_FALSE(Same("(0, 1)", "0 < x < 1"));
  EXPECT_TRUE(Same("0<f(x)<1", "(0,1)"));
  EXPECT_TRUE(Same("1\\leq|z|\\leq \\frac32",
                   "z \\in [-\\frac32,-1] \\cup [1,\\frac32]"));
  EXPECT_FALSE(Same("z \\in [-\\frac32,-1] \\cup [1,\\frac32]",
                    "1\\leq|z|\\leq \\frac32"));  // a set reference
  EXPECT_FALSE(Same("z \\in [-\\frac32,-1] \\cup [1,\\frac32]",
                    "1<|z|\\leq \\frac32"));
  EXPECT_TRUE(Same("x < -1 \\text{ or } x > 2", "(-\\infty,-1)\\cup(2,\\infty)"));
  EXPECT_TRUE(Same("x \\in [-2,7]", "x \\in [-2, 7]"));
}

TEST(CompareAnswersTest, EquationsUpToANonZeroFactor) {
  EXPECT_TRUE(Same("y=-\\frac12x+\\frac34", "2x+4y-3=0"));
  EXPECT_FALSE(Same("y=-\\frac12x+\\frac34", "2x+4y+3=0"));
  EXPECT_TRUE(Same("x^2/16 + y^2/12 = 1/4", "x^2/4 + y^2/3 = 1"));
  EXPECT_FALSE(Same("x^2/16 + y^2/12 = 1/4", "x^2/4 + y^2/3 = 2"));
  EXPECT_FALSE(Same("x + y = 1", "x - y = 1"));
}

TEST(CompareAnswersTest, LabelledAnswersAndRatios) {
  EXPECT_TRUE(Same("(3,2)", "(p,q)=(3,2)"));
  EXPECT_FALSE(Same("(3,2)", "(p,q)=(2,3)"));
  EXPECT_TRUE(Same("4, 5", "AB=4,CD=5"));
  EXPECT_FALSE(Same("4, 5", "AB=5,CD=4"));
  EXPECT_TRUE(Same("7:32", "S_{MBCN}:S=7:32"));
  EXPECT_TRUE(Same("7:32", "\\frac{7}{32}"));
  EXPECT_TRUE(Same("3", "\\log_2(8) = 3"));
  EXPECT_FALSE(Same("3", "x + 1 = 3"));  // an equation is not its right side
  EXPECT_TRUE(Same("x^2+1", "f(x) = x^2+1"));
}

TEST(CompareAnswersTest, MixedNumbersPercentWordsUnitsAndScientificNotation) {
  EXPECT_TRUE(Same("918.5", "918\\frac{1}{2}"));
  EXPECT_TRUE(Same("-918.5", "-918\\frac12"));
  EXPECT_TRUE(Same("2x", "2\\frac{x}{1}"));  // not a mixed number
  EXPECT_TRUE(Same("28\\%", "28 percent"));
  EXPECT_TRUE(Same("28\\%", "28 pct"));
  EXPECT_TRUE(Same("125\\textnormal{ miles}", "125"));
  EXPECT_TRUE(Same("21\\text{ dogs}", "21"));
  EXPECT_TRUE(Same("12\\textup{ cm}^2", "12"));
  EXPECT_TRUE(Same("6.022 \\times 10^{23}", "6.022e23"));
  EXPECT_TRUE(Same("300000000", "3 \\times 10^{8}"));
  EXPECT_FALSE(Same("300000000", "3 \\times 10^{9}"));
}

TEST(CompareAnswersTest, MatricesInAnyEnvironment) {
  EXPECT_TRUE(Same("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
                   "\\left[\\begin{array}{cc} 1 & 2 \\\\ 3 & 4 "
                   "\\end{array}\\right]"));
  EXPECT_FALSE(Same("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
                    "\\left[\\begin{array}{cc} 1 & 2 \\\\ 4 & 3 "
                    "\\end{array}\\right]"));
}

TEST(CompareAnswersTest, TrigonometricIdentitiesByEvaluation) {
  EXPECT_TRUE(Same("\\tan^2(y)+1", "\\sec^2(y)"));
  EXPECT_TRUE(Same("\\sin(2x)", "2\\sin x\\cos x"));
  EXPECT_FALSE(Same("\\tan^2(y)-1", "\\sec^2(y)"));
}

// 128-bit rationals wrapped on these before; GMP computes them exactly.
TEST(CompareAnswersTest, ArithmeticNeverWraps) {
  EXPECT_FALSE(Same("0", "(2^{64})^{2}"));
  EXPECT_TRUE(Same("340282366920938463463374607431768211456", "(2^{64})^{2}"));
  EXPECT_FALSE(Same("12", "2^{64}\\cdot2^{64}+12"));
  EXPECT_FALSE(Same("0", "1/(10^{30}-1)+1/(10^{30}-3)"));
  EXPECT_FALSE(Same("73786976294838206467", "lcm(2^{64}+1, 2^{64}+3)"));
  EXPECT_TRUE(Same("340282366920938463537161583726606417923",
                   "\\operatorname{lcm}(2^{64}+1, 2^{64}+3)"));
  EXPECT_TRUE(Same("2^{4950}", "2^{4949}\\cdot 2"));
  EXPECT_FALSE(Same("2^{4950}", "2^{4950}+1"));
  EXPECT_FALSE(Same("2^{100000}", "2^{100000}+1"));  // too large: not equal
  EXPECT_TRUE(Same("\\binom{200}{100}",
                   "90548514656103281165404177077484163874504589675413336841320"));
  EXPECT_TRUE(Same("30!", "265252859812191058636308480000000"));
}

}  // namespace
}  // namespace microrl::reward

namespace microrl::reward {
namespace {

TEST(CompareAnswersTest, ValuesTooLargeForExactArithmeticAreNotComparedInDoubles) {
  // 3^{20000} needs 31,700 bits: 1/3^{20000} is 0 in doubles, but not 0.
  const Comparison tiny = CompareAnswers("0", "\\frac{1}{3^{20000}}");
  EXPECT_FALSE(tiny.equal);
  EXPECT_THAT(tiny.reason, HasSubstr("too large to compare exactly"));
  EXPECT_FALSE(Same("1", "\\frac{3^{20000}+1}{3^{20000}}"));
  EXPECT_FALSE(Same("0", "(3^{20000}+1)-3^{20000}"));
  EXPECT_FALSE(Same("0", "2^{-100000}"));
  EXPECT_FALSE(Same("1", "1^{10^{30}}+0^{10^{30}}+1"));
  EXPECT_TRUE(Same("1", "1^{10^{30}}"));  // stays small, computed exactly
}

}  // namespace
}  // namespace microrl::reward
