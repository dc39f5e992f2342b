// pass@k's unbiased estimator and the tables.
#include "learner/evaluate.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl::learner {
namespace {

using ::testing::HasSubstr;

// 1 - C(n - c, k) / C(n, k) by exact binomials.
double Reference(int n, int c, int k) {
  auto choose = [](int a, int b) {
    if (b < 0 || b > a) return 0.0;
    double r = 1;
    for (int i = 1; i <= b; ++i) r = r * (a - b + i) / i;
    return r;
  };
  return 1 - choose(n - c, k) / choose(n, k);
}

TEST(EvaluateTest, PassAtKIsTheUnbiasedEstimator) {
  EXPECT_DOUBLE_EQ(PassAtK(16, 4, 1), 0.25);
  EXPECT_NEAR(PassAtK(16, 4, 8), 1 - 495.0 / 12870.0, 1e-12);
  EXPECT_EQ(PassAtK(16, 0, 16), 0.0);
  EXPECT_EQ(PassAtK(16, 1, 16), 1.0);
  EXPECT_EQ(PassAtK(16, 12, 8), 1.0);  // fewer than k wrong: always passes
  for (int n : {1, 8, 16, 64}) {
    for (int c = 0; c <= n; ++c) {
      for (int k : {1, 2, 8, 16}) {
        if (k > n) continue;
        EXPECT_NEAR(PassAtK(n, c, k), Reference(n, c, k), 1e-9)
            << n << " " << c << " " << k;
      }
    }
  }
}

TEST(EvaluateTest, TablesAndJsonSayWhatWasMeasured) {
  EvalResult result;
  result.dataset = "aime24";
  result.problems = 30;
  result.samples = 16;
  result.pass_at = {{1, 0.4}, {8, 0.6}, {16, 0.7}};
  const std::string table = PassAtKTable({result}, {1, 8, 16});
  EXPECT_THAT(
      table,
      HasSubstr("| dataset | problems | n | pass@1 | pass@8 | pass@16 |"));
  EXPECT_THAT(table, HasSubstr("| aime24 | 30 | 16 | 40.0 | 60.0 | 70.0 |"));
  const nlohmann::ordered_json json = EvalResultToJson(result);
  EXPECT_EQ(json["pass@16"], 0.7);
  EXPECT_EQ(json["dataset"], "aime24");
}

}  // namespace
}  // namespace microrl::learner
