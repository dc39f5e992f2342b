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
