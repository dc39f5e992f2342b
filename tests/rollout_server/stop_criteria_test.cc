// Stop tokens and stop strings as a pure function of ids and text.
#include "rollout_server/stop_criteria.h"

#include "gtest/gtest.h"

namespace microrl::rollout {
namespace {

TEST(StopCriteriaTest, StopTokens) {
  const StopCriteria stop({7, 2, 151645}, {});
  EXPECT_TRUE(stop.IsStopToken(2));
  EXPECT_TRUE(stop.IsStopToken(151645));
  EXPECT_FALSE(stop.IsStopToken(3));
  EXPECT_FALSE(stop.has_stop_strings());
  EXPECT_FALSE(stop.FindStopString("anything", 0).has_value());
}

TEST(StopCriteriaTest, FindsAStopStringThatEndsInTheNewText) {
  const StopCriteria stop({}, {"</answer>", "\n\n"});
  // "</ans" was there before; "wer>" completes it.
  const std::string text = "x = 3 </answer> more";
  const auto match = stop.FindStopString(text, 11);
  ASSERT_TRUE(match.has_value());
  EXPECT_EQ(match->position, 6u);
  EXPECT_EQ(*match->stop, "</answer>");
  // Nothing new reaches a stop string.
  EXPECT_FALSE(stop.FindStopString("abc", 3).has_value());
}

TEST(StopCriteriaTest, TheEarliestMatchWinsThenTheFirstListed) {
  const StopCriteria stop({}, {"bc", "ab", "b"});
  const auto match = stop.FindStopString("xabc", 1);
  ASSERT_TRUE(match.has_value());
  EXPECT_EQ(match->position, 1u);
  EXPECT_EQ(*match->stop, "ab");
  const StopCriteria same_start({}, {"b", "bc"});
  EXPECT_EQ(*same_start.FindStopString("xbc", 1)->stop, "b");
}

TEST(StopCriteriaTest, LooksBackOnlyAsFarAsTheLongestStopString) {
  // "ab" entirely in the text searched before: not found again.
  const StopCriteria stop({}, {"ab"});
  EXPECT_FALSE(stop.FindStopString("ab-----", 5).has_value());
  EXPECT_TRUE(stop.FindStopString("-----ab", 6).has_value());
}

}  // namespace
}  // namespace microrl::rollout
