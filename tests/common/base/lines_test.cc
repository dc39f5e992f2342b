#include "common/base/lines.h"

#include <sstream>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace microrl {
namespace {

TEST(LinesTest, BlankLinesAreSkippedAndCounted) {
  std::istringstream in("a\n\n  \t\r\nb c\r\n\nlast");
  std::vector<std::pair<int64_t, std::string>> seen;
  ASSERT_TRUE(
      ForEachNonBlankLine(in, [&](int64_t line, const std::string& text) {
        seen.emplace_back(line, text);
        return absl::OkStatus();
      }).ok());
  const std::vector<std::pair<int64_t, std::string>> want = {
      {1, "a"}, {4, "b c\r"}, {6, "last"}};
  EXPECT_EQ(seen, want);
}

TEST(LinesTest, TheFirstErrorStopsTheReading) {
  std::istringstream in("1\n2\n3\n");
  int64_t calls = 0;
  const absl::Status status =
      ForEachNonBlankLine(in, [&](int64_t line, const std::string&) {
        ++calls;
        return line == 2 ? absl::InvalidArgumentError("line 2")
                         : absl::OkStatus();
      });
  EXPECT_EQ(status, absl::InvalidArgumentError("line 2"));
  EXPECT_EQ(calls, 2);
}

TEST(LinesTest, AnEmptyStreamCallsNothing) {
  std::istringstream in("");
  EXPECT_TRUE(ForEachNonBlankLine(in, [](int64_t, const std::string&) {
                return absl::InternalError("called");
              }).ok());
}

}  // namespace
}  // namespace microrl
