#include "reward_service/math/rational.h"

#include <cmath>

#include "gtest/gtest.h"

namespace microrl::reward {
namespace {

Rational R(int64_t p, int64_t q = 1) { return *Rational::Fraction(p, q); }

TEST(RationalTest, ParsesDecimalsExactly) {
  EXPECT_EQ(*Rational::FromDecimal("2.50"), R(5, 2));
  EXPECT_EQ(*Rational::FromDecimal("-.125"), R(-1, 8));
  EXPECT_EQ(*Rational::FromDecimal("1.5e-3"), R(3, 2000));
  EXPECT_EQ(*Rational::FromDecimal("025"), R(25));
  EXPECT_EQ(Rational::FromDecimal("1e").has_value(), false);
  EXPECT_EQ(Rational::FromDecimal("abc").has_value(), false);
  EXPECT_EQ(Rational::FromDecimal("1e99999").has_value(), false);  // too large
  EXPECT_EQ(Rational::FromDecimal("12345678901234567890123456789012345")
                ->ToString(),
            "12345678901234567890123456789012345");
}

TEST(RationalTest, ArithmeticBeyondSixtyFourBits) {
  const Rational two64 = *R(2).Power(64);
  EXPECT_EQ(two64.ToString(), "18446744073709551616");
  EXPECT_EQ(two64.Times(two64)->ToString(),
            "340282366920938463463374607431768211456");
  EXPECT_EQ(two64.Times(two64)->Plus(R(12))->ToString(),
            "340282366920938463463374607431768211468");
  const Rational big = *R(10).Power(30);
  const Rational sum = *big.Plus(R(-1))->Inverse()->Plus(
      *big.Plus(R(-3))->Inverse());
  EXPECT_FALSE(sum.is_zero());
  EXPECT_GT(sum.ToDouble(), 1.9e-30);
}

TEST(RationalTest, RefusesResultsOverTheLimitBeforeComputingThem) {
  EXPECT_FALSE(R(2).Power(Rational::kMaxBits + 1).has_value());
  EXPECT_TRUE(R(2).Power(Rational::kMaxBits - 1).has_value());
  EXPECT_FALSE(R(3).Power(int64_t{1} << 60).has_value());
  EXPECT_EQ(*R(1).Power(int64_t{1} << 60), R(1));
  EXPECT_EQ(*R(-1).Power((int64_t{1} << 60) + 1), R(-1));
  EXPECT_EQ(*R(0).Power(int64_t{1} << 60), R(0));
  EXPECT_FALSE(R(100000).Factorial().has_value());
  EXPECT_EQ(R(20).Factorial()->ToString(), "2432902008176640000");
  EXPECT_FALSE(Rational::Binomial(*R(10).Power(9), R(500000)).has_value());
  EXPECT_EQ(Rational::Binomial(*R(10).Power(9), R(1))->ToString(),
            "1000000000");
  EXPECT_EQ(*Rational::Binomial(R(5), R(7)), R(0));
  const Rational huge = *R(2).Power(Rational::kMaxBits - 1);
  EXPECT_FALSE(huge.Times(huge).has_value());
  EXPECT_TRUE(std::isinf(huge.ToDouble()));
  EXPECT_EQ(huge.Inverse()->ToDouble(), 0.0);
}

TEST(RationalTest, RootsAndIntegerFunctions) {
  EXPECT_EQ(*R(9, 4).Root(2), R(3, 2));
  EXPECT_EQ(*R(-8).Root(3), R(-2));
  EXPECT_FALSE(R(-8).Root(2).has_value());
  EXPECT_FALSE(R(2).Root(2).has_value());
  EXPECT_EQ(*Rational::Gcd(R(12), R(-18)), R(6));
  EXPECT_EQ(Rational::Lcm(*R(2).Power(64)->Plus(R(1)),
                          *R(2).Power(64)->Plus(R(3)))
                ->ToString(),
            "340282366920938463537161583726606417923");
  EXPECT_FALSE(Rational::Gcd(R(1, 2), R(3)).has_value());
  EXPECT_FALSE(R(0).Inverse().has_value());
  EXPECT_FALSE(Rational::Fraction(1, 0).has_value());
}

}  // namespace
}  // namespace microrl::reward
