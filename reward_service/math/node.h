#ifndef MICRORL_REWARD_SERVICE_MATH_NODE_H_
#define MICRORL_REWARD_SERVICE_MATH_NODE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "reward_service/math/rational.h"

// A parsed answer: a tree of numbers, symbols, operations, collections and
// relations.
namespace microrl::reward::math {

enum class Kind {
  kNumber,     // value (exact), decimal flag
  kSymbol,     // name
  kConstant,   // name: pi, e, i, inf
  kAdd,        // args
  kMul,        // args
  kPow,        // base, exponent
  kNeg,        // arg
  kInv,        // 1 / arg
  kFunction,   // name, args
  kFactorial,  // arg
  kPercent,    // arg (x%)
  kAbs,        // arg
  kPlusMinus,  // a ± b (args: a, b; name "mp" for ∓)
  kTuple,      // args, in order
  kSet,        // args, unordered
  kList,       // top-level comma list: unordered answers
  kInterval,   // args: a, b; left_closed, right_closed
  kUnion,      // args
  kMatrix,     // args row-major; rows, cols
  kRelation,   // name: = < > <= >= !=, args: lhs, rhs
  kText,       // name: normalized text
};

struct Node;
using NodeP = std::shared_ptr<Node>;
struct Node {
  Kind kind;
  Rational value;
  bool decimal = false;  // a number written with a decimal point or exponent
  int places = 0;        // digits written after the decimal point
  std::string name;
  std::vector<NodeP> args;
  bool left_closed = false, right_closed = false;
  int rows = 0, cols = 0;
};

inline NodeP Make(Kind kind, std::vector<NodeP> args = {},
                  std::string name = "") {
  auto node = std::make_shared<Node>();
  node->kind = kind;
  node->args = std::move(args);
  node->name = std::move(name);
  return node;
}
inline NodeP Number(Rational value, bool decimal = false) {
  auto node = Make(Kind::kNumber);
  node->value = value;
  node->decimal = decimal;
  return node;
}

}  // namespace microrl::reward::math

#endif  // MICRORL_REWARD_SERVICE_MATH_NODE_H_
