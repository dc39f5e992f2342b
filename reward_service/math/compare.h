#ifndef MICRORL_REWARD_SERVICE_MATH_COMPARE_H_
#define MICRORL_REWARD_SERVICE_MATH_COMPARE_H_

#include "reward_service/math/budget.h"
#include "reward_service/math/node.h"

// Equivalence of two answer trees: the rules of docs/reward.md (exact values,
// numeric checks of expressions at random points, sets, intervals, relations,
// ordered and unordered lists).
namespace microrl::reward::math {

struct TreeComparison {
  bool equal = false;
  // A value was too large to compare exactly (see Exact).
  bool too_large = false;
};

// Whether `pred` answers `gold`.
TreeComparison CompareTrees(const NodeP& gold, const NodeP& pred,
                            Budget& budget);

}  // namespace microrl::reward::math

#endif  // MICRORL_REWARD_SERVICE_MATH_COMPARE_H_
