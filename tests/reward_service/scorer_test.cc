#include "reward_service/scorer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl::reward {
namespace {

using ::testing::HasSubstr;

ScoreOutput Score(const std::string& completion, const std::string& truth,
                  const std::string& prompt = "") {
  return ScoreCompletion({"id", prompt, completion, truth}, ScoreOptions());
}

TEST(ScorerTest, FormatPlusCorrectness) {
  ScoreOutput out =
      Score("<think>2+2=4</think>\nThe answer is \\boxed{4}.", "4");
  EXPECT_TRUE(out.correct);
  EXPECT_DOUBLE_EQ(out.reward, 1.1);
  EXPECT_EQ(out.components.at("format"), 1.0);
  EXPECT_EQ(out.extracted_answer, "4");
  EXPECT_EQ(out.reason, "");

  out = Score("<think>hmm</think> \\boxed{5}", "4");
  EXPECT_FALSE(out.correct);
  EXPECT_DOUBLE_EQ(out.reward, 0.1);
  EXPECT_THAT(out.reason, HasSubstr("answer 5 != reference 4"));
}

TEST(ScorerTest, AnswerOnlyInsideTheThoughtDoesNotCount) {
  const ScoreOutput out = Score("<think>it is \\boxed{4} I think", "4");
  EXPECT_FALSE(out.correct);
  EXPECT_EQ(out.reward, 0.0);
  EXPECT_THAT(out.reason, HasSubstr("never closed"));
}

TEST(ScorerTest, NoThinkBlockStillGradesTheAnswerButNotTheFormat) {
  const ScoreOutput out = Score("Easy: \\boxed{\\frac12}", "0.5");
  EXPECT_TRUE(out.correct);
  EXPECT_DOUBLE_EQ(out.reward, 1.0);
  EXPECT_EQ(out.components.at("format"), 0.0);
  EXPECT_THAT(out.reason, HasSubstr("format: no <think>"));
}

TEST(ScorerTest, GroundTruthMayBeASolutionText) {
  const ScoreOutput out =
      Score("<think>x</think>\\boxed{9}",
            "We compute 3^2, so the answer is $\\boxed{9}$.");
  EXPECT_TRUE(out.correct);
  EXPECT_EQ(ReferenceAnswer("so $\\boxed{\\frac{1}{2}}$."), "\\frac{1}{2}");
  EXPECT_EQ(ReferenceAnswer("$025$"), "025");
}

TEST(ScorerTest, EveryZeroHasAReason) {
  for (const char* completion :
       {"", "<think></think>", "<think>a</think> no answer", "\\boxed{}"}) {
    const ScoreOutput out = Score(completion, "3");
    EXPECT_FALSE(out.correct);
    EXPECT_FALSE(out.reason.empty()) << completion;
  }
  EXPECT_THAT(Score("\\boxed{3}", "").reason, HasSubstr("empty ground truth"));
}

TEST(ScorerTest, AnswerModeComparesABareAnswer) {
  ScoreOutput out =
      ScoreAnswer({"a", "", "$\\boxed{0.5}$", "\\frac{1}{2}"}, ScoreOptions());
  EXPECT_TRUE(out.correct);
  EXPECT_EQ(out.components.count("format"), 0u);
  EXPECT_DOUBLE_EQ(out.reward, 1.0);
  out = ScoreAnswer({"b", "", "x = 3", "4"}, ScoreOptions());
  EXPECT_FALSE(out.correct);
  EXPECT_FALSE(out.reason.empty());
}

TEST(ScorerTest, WeightsAreConfigurable) {
  ScoreOptions options;
  options.format_weight = 0.5;
  options.correct_weight = 2.0;
  const ScoreOutput out =
      ScoreCompletion({"w", "", "<think>a</think>\\boxed{1}", "1"}, options);
  EXPECT_DOUBLE_EQ(out.reward, 2.5);
}

}  // namespace
}  // namespace microrl::reward

namespace microrl::reward {
namespace {

bool Correct(const std::string& completion, const std::string& truth) {
  const ScoreOutput out = Score(completion, truth);
  EXPECT_TRUE(out.correct || !out.reason.empty());
  return out.correct;
}

// Issue 16's free-text outputs, scored as completions (the default mode).
TEST(ScorerTest, FreeTextCompletionsWithoutABox) {
  EXPECT_TRUE(Correct("Answer $ 9 $", "9"));
  EXPECT_TRUE(Correct("The result is $3$", "3"));
  EXPECT_TRUE(Correct("Final answer: 42", "42"));
  EXPECT_TRUE(Correct("$\\log_2(8) = 3$", "3"));
  EXPECT_TRUE(Correct("Therefore $x \\geq 5$ is the solution.", "x \\ge 5"));
  EXPECT_TRUE(Correct("Therefore $x \\in [5, \\infty)$ is the solution.", "x \\ge 5"));
  EXPECT_FALSE(Correct("Therefore $x \\in (5, \\infty)$ is the solution.", "x \\ge 5"));
  EXPECT_TRUE(Correct("<think>so</think> It is 28 percent.", "28\\%"));
  EXPECT_TRUE(Correct("We drive 125 miles.", "125\\textnormal{ miles}"));
  EXPECT_TRUE(Correct("Hence the matrix is $\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 "
                      "\\end{pmatrix}$.",
                      "\\left[\\begin{array}{cc} 1 & 2 \\\\ 3 & 4 "
                      "\\end{array}\\right]"));
  EXPECT_TRUE(Correct("So $(p,q)=(3,2)$.", "(3,2)"));
  EXPECT_TRUE(Correct("We get $AB=4,CD=5$.", "4, 5"));
  EXPECT_TRUE(Correct("The ratio is $S_{MBCN}:S=7:32$.", "7:32"));
  EXPECT_TRUE(Correct("$\\boxed{1}, \\boxed{2}, \\boxed{3}$", "\\{1,2,3\\}"));
  EXPECT_TRUE(Correct("It simplifies to $\\sec^2(y)$.", "\\tan^2(y)+1"));
  EXPECT_TRUE(Correct("So $z \\in [-\\frac32,-1] \\cup [1,\\frac32]$.",
                      "1\\leq|z|\\leq \\frac32"));
  EXPECT_TRUE(Correct("The count is 6.022e23 molecules.", "6.022\\times10^{23}"));
  EXPECT_TRUE(Correct("It moves at 3 \\times 10^{8} m/s.", "300000000"));
  EXPECT_TRUE(Correct("The price is $918\\frac{1}{2}$.", "918.5"));
  EXPECT_FALSE(Correct("The roots are $4, 10, -2$.", "10, 4, -2"));
  EXPECT_TRUE(Correct("The roots are $4, 10, -2$.", "\\{10, 4, -2\\}"));
}

TEST(ScorerTest, ReferenceMayBeABareAnswerOrFreeText) {
  EXPECT_TRUE(Correct("\\boxed{5}", "The answer is 5."));
  EXPECT_TRUE(Correct("\\boxed{x=5}", "x = 5"));
  EXPECT_TRUE(Correct("\\boxed{y = 2x + 1}", "$2x - y + 1 = 0$"));
}

TEST(ScorerTest, LongCompletionsAreSearchedNotRefused) {
  std::string work = "<think>";
  for (int i = 0; i < 500; ++i) work += "We try case " + std::to_string(i) + ". ";
  work += "</think>\n";
  for (int i = 0; i < 200; ++i) work += "Checking step " + std::to_string(i) + ".\n";
  ASSERT_GT(work.size(), 10'000u);
  const ScoreOutput out = Score(work + "The final answer is $\\frac{7}{2}$.", "3.5");
  EXPECT_TRUE(out.correct) << out.reason;
  EXPECT_EQ(out.answer_source, "phrase");
  EXPECT_FALSE(Correct(work + "The final answer is $\\frac{7}{3}$.", "3.5"));
}

}  // namespace
}  // namespace microrl::reward

namespace microrl::reward {
namespace {

bool IsUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3
                               : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// Results go into protobuf strings and JSON: a reason cut inside a character,
// or model output that is not UTF-8, must not break them.
TEST(ScorerTest, ReasonsAndAnswersAreValidUtf8) {
  std::string accents;
  for (int i = 0; i < 40; ++i) accents += "x\xC3\xA9";
  for (const std::string& completion :
       {"\\boxed{" + accents + "}", std::string("\\boxed{1\xFF\xFE}"),
        "The answer is " + accents + "."}) {
    const ScoreOutput out = Score(completion, "3");
    EXPECT_FALSE(out.correct);
    EXPECT_TRUE(IsUtf8(out.reason)) << out.reason;
    EXPECT_TRUE(IsUtf8(out.extracted_answer)) << out.extracted_answer;
  }
}

}  // namespace
}  // namespace microrl::reward
