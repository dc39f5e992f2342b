#include "common/base/enum_names.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl {
namespace {

using ::testing::HasSubstr;

enum class Color { kRed, kGreen, kBlue, kUnnamed };
constexpr EnumName<Color> kColorNames[] = {{Color::kRed, "red"},
                                           {Color::kGreen, "green"},
                                           {Color::kBlue, "blue"},
                                           {Color::kGreen, "g"},
                                           {Color::kRed, "r"}};

TEST(EnumNamesTest, AValueIsNamedByItsFirstEntry) {
  EXPECT_STREQ(NameOf(Color::kRed, kColorNames), "red");
  EXPECT_STREQ(NameOf(Color::kGreen, kColorNames), "green");
  EXPECT_STREQ(NameOf(Color::kUnnamed, kColorNames), "?");
  EXPECT_STREQ(NameOf(Color::kUnnamed, kColorNames, "unknown"), "unknown");
  static_assert(NameOf(Color::kBlue, kColorNames)[0] == 'b');
}

TEST(EnumNamesTest, NamesAndAliasesAreRead) {
  EXPECT_EQ(ValueOf("green", kColorNames), Color::kGreen);
  EXPECT_EQ(ValueOf("g", kColorNames), Color::kGreen);
  EXPECT_EQ(ValueOf("r", kColorNames), Color::kRed);
  EXPECT_EQ(ValueOf("Green", kColorNames), std::nullopt);
  EXPECT_EQ(ValueOf("", kColorNames), std::nullopt);
  // Own names only: aliases refused.
  EXPECT_EQ(ValueOfOwnName("blue", kColorNames), Color::kBlue);
  EXPECT_EQ(ValueOfOwnName("g", kColorNames), std::nullopt);
}

TEST(EnumNamesTest, OwnNamesListTheValuesOnce) {
  EXPECT_EQ(OwnNames(kColorNames), "red, green or blue");
  EXPECT_EQ(OwnNames(kColorNames, ", ", ", "), "red, green, blue");
  constexpr EnumName<Color> kOne[] = {{Color::kRed, "red"}, {Color::kRed, "r"}};
  EXPECT_EQ(OwnNames(kOne), "red");
}

TEST(EnumNamesTest, ParseEnumNameSaysWhatItWanted) {
  EXPECT_EQ(*ParseEnumName("color", "r", kColorNames), Color::kRed);
  const absl::StatusOr<Color> bad = ParseEnumName("color", "pink", kColorNames);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "color \"pink\" is not one of red, green, blue");
}

}  // namespace
}  // namespace microrl
