#include "reward_service/math/compare.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "reward_service/math/evaluate.h"

namespace microrl::reward::math {
namespace {

// Whether two trees are written alike (same kinds, names, values, shapes).
bool SameTree(const Node& a, const Node& b) {
  if (a.kind != b.kind || a.name != b.name || a.args.size() != b.args.size() ||
      a.left_closed != b.left_closed || a.right_closed != b.right_closed ||
      a.rows != b.rows || a.cols != b.cols)
    return false;
  if (a.kind == Kind::kNumber && !(a.value == b.value)) return false;
  for (size_t i = 0; i < a.args.size(); ++i) {
    if (!SameTree(*a.args[i], *b.args[i])) return false;
  }
  return true;
}

class Comparer {
 public:
  explicit Comparer(Budget& budget) : budget_(budget) {}

  bool Equal(const NodeP& gold, const NodeP& pred) {
    budget_.Step();
    // A labelled answer against a bare one: "x = 5", "(p, q) = (3, 2)",
    // "AB = 4", "z \in [1, 2]" against "5", "(3, 2)", "4", "[1, 2]". A
    // prediction may also show its computation: "\log_2 8 = 3" against "3".
    if (gold->kind == Kind::kRelation && pred->kind != Kind::kRelation &&
        IsLabelled(*gold)) {
      return Equal(gold->args[1], pred);
    }
    if (pred->kind == Kind::kRelation && gold->kind != Kind::kRelation &&
        (IsLabelled(*pred) || IsComputation(*pred))) {
      return Equal(gold, pred->args[1]);
    }
    // "a = 4, -8, -10": one name for several values is the set of them.
    if (NodeP values = LabelledValues(*gold)) return Equal(values, pred);
    if (NodeP values = LabelledValues(*pred)) return Equal(gold, values);
    // Arithmetic on matrices: "A + B", "A B", "2A" against the matrix.
    if (pred->kind != Kind::kMatrix && HasMatrix(*pred)) {
      if (std::optional<NodeP> m = MatrixValue(pred)) return Equal(gold, *m);
    }
    if (gold->kind != Kind::kMatrix && HasMatrix(*gold)) {
      if (std::optional<NodeP> m = MatrixValue(gold)) return Equal(*m, pred);
    }
    // a ± b: both values.
    if (gold->kind == Kind::kPlusMinus && pred->kind != Kind::kPlusMinus)
      return Equal(Expand(gold), pred);
    if (pred->kind == Kind::kPlusMinus && gold->kind != Kind::kPlusMinus)
      return Equal(gold, Expand(pred));
    // A single-element collection against its element.
    if (IsUnordered(*gold) && gold->args.size() == 1 && !IsUnordered(*pred))
      return Equal(gold->args[0], pred);
    if (IsUnordered(*pred) && pred->args.size() == 1 && !IsUnordered(*gold))
      return Equal(gold, pred->args[0]);

    if (IsScalar(*gold) && IsScalar(*pred)) return ScalarEqual(*gold, *pred);
    if (StructurallyEqual(gold, pred)) return true;
    // Sets of real numbers however written: intervals, unions, inequalities.
    if (std::optional<bool> same = SameRealSet(*gold, *pred)) return *same;
    if (gold->kind == Kind::kRelation && pred->kind == Kind::kRelation)
      return EquivalentRelations(*gold, *pred);
    return false;
  }

 private:
  bool StructurallyEqual(const NodeP& gold, const NodeP& pred) {
    switch (gold->kind) {
      case Kind::kText:
        return pred->kind == Kind::kText ? gold->name == pred->name : false;
      case Kind::kTuple:
        if (pred->kind == Kind::kTuple || pred->kind == Kind::kList)
          return Ordered(gold->args, pred->args);
        if (pred->kind == Kind::kInterval) return OpenInterval(*pred, *gold);
        return false;
      case Kind::kInterval:
        if (pred->kind == Kind::kInterval) {
          return gold->left_closed == pred->left_closed &&
                 gold->right_closed == pred->right_closed &&
                 Ordered(gold->args, pred->args);
        }
        if (pred->kind == Kind::kTuple) return OpenInterval(*gold, *pred);
        if (pred->kind == Kind::kUnion && pred->args.size() == 1)
          return Equal(gold, pred->args[0]);
        return false;
      case Kind::kSet:
        if (pred->kind == Kind::kSet || pred->kind == Kind::kList)
          return Unordered(gold->args, pred->args);
        if (pred->kind == Kind::kPlusMinus)
          return Unordered(gold->args, Expand(pred)->args);
        return false;
      case Kind::kList:
        // A list is ordered unless the reference joins it with "and"/"or",
        // either side writes a set, it lists solutions as tuples ("(1,2),
        // (2,1)"), or both sides name every element ("a_3 = 2, a_{37} = 19").
        if (pred->kind == Kind::kSet || pred->kind == Kind::kPlusMinus ||
            (pred->kind == Kind::kList &&
             (gold->name != "," || pred->name != "," || AllTuples(*gold) ||
              AllTuples(*pred) ||
              (AllLabelled(*gold) && AllLabelled(*pred))))) {
          return Unordered(gold->args, pred->kind == Kind::kPlusMinus
                                           ? Expand(pred)->args
                                           : pred->args);
        }
        if (pred->kind == Kind::kList || pred->kind == Kind::kTuple)
          return Ordered(gold->args, pred->args);
        return false;
      case Kind::kUnion:
        if (pred->kind == Kind::kUnion)
          return Unordered(gold->args, pred->args);
        return false;
      case Kind::kMatrix:
        return pred->kind == Kind::kMatrix && gold->rows == pred->rows &&
               gold->cols == pred->cols && Ordered(gold->args, pred->args);
      case Kind::kFunction:  // \sum_{k=0}^{n} ...: equal bounds and bodies
        return pred->kind == Kind::kFunction && gold->name == pred->name &&
               Ordered(gold->args, pred->args);
      case Kind::kPlusMinus:
        if (pred->kind == Kind::kPlusMinus) {
          return (Equal(gold->args[0], pred->args[0]) &&
                  Equal(gold->args[1], pred->args[1])) ||
                 Equal(Expand(gold), Expand(pred));
        }
        return false;
      case Kind::kRelation:
        if (pred->kind != Kind::kRelation) return false;
        if (gold->name == pred->name) {
          if (Equal(gold->args[0], pred->args[0]) &&
              Equal(gold->args[1], pred->args[1]))
            return true;
          return (gold->name == "=" || gold->name == "!=") &&
                 Equal(gold->args[0], pred->args[1]) &&
                 Equal(gold->args[1], pred->args[0]);
        }
        return Flipped(gold->name) == pred->name &&
               Equal(gold->args[0], pred->args[1]) &&
               Equal(gold->args[1], pred->args[0]);
      default:
        return false;
    }
  }

  // "x = 1, 2, 3" (a list whose first element names a variable and whose
  // other elements are bare values): the set {1, 2, 3}; nullptr otherwise.
  static NodeP LabelledValues(const Node& n) {
    if (n.kind != Kind::kList || n.args.size() < 2 || !IsLabelled(*n.args[0]) ||
        n.args[0]->name != "=")
      return nullptr;
    std::vector<NodeP> values = {n.args[0]->args[1]};
    for (size_t i = 1; i < n.args.size(); ++i) {
      if (n.args[i]->kind == Kind::kRelation) return nullptr;
      values.push_back(n.args[i]);
    }
    return Make(Kind::kSet, std::move(values));
  }

  static bool HasMatrix(const Node& n) {
    if (n.kind == Kind::kMatrix) return true;
    if (n.kind != Kind::kAdd && n.kind != Kind::kMul && n.kind != Kind::kNeg)
      return false;
    return std::any_of(n.args.begin(), n.args.end(),
                       [](const NodeP& a) { return HasMatrix(*a); });
  }

  // The matrix a sum, product or negation of matrices (and scalars) is, with
  // its entries as expressions; nullopt when the shapes do not fit.
  std::optional<NodeP> MatrixValue(const NodeP& n) {
    budget_.Step();
    const auto entry = [](const Node& m, int r, int c) {
      return m.args[static_cast<size_t>(r * m.cols + c)];
    };
    const auto make = [](int rows, int cols, std::vector<NodeP> entries) {
      NodeP m = Make(Kind::kMatrix, std::move(entries));
      m->rows = rows;
      m->cols = cols;
      return m;
    };
    switch (n->kind) {
      case Kind::kMatrix:
        return n;
      case Kind::kNeg: {
        std::optional<NodeP> m = MatrixValue(n->args[0]);
        if (!m) return std::nullopt;
        std::vector<NodeP> entries;
        for (const NodeP& e : (*m)->args)
          entries.push_back(Make(Kind::kNeg, {e}));
        return make((*m)->rows, (*m)->cols, std::move(entries));
      }
      case Kind::kAdd: {
        std::optional<NodeP> sum;
        for (const NodeP& term : n->args) {
          std::optional<NodeP> m = MatrixValue(term);
          if (!m) return std::nullopt;
          if (!sum) {
            sum = m;
            continue;
          }
          if ((*sum)->rows != (*m)->rows || (*sum)->cols != (*m)->cols)
            return std::nullopt;
          std::vector<NodeP> entries;
          for (size_t k = 0; k < (*m)->args.size(); ++k)
            entries.push_back(
                Make(Kind::kAdd, {(*sum)->args[k], (*m)->args[k]}));
          sum = make((*m)->rows, (*m)->cols, std::move(entries));
        }
        return sum;
      }
      case Kind::kMul: {
        std::optional<NodeP> product;
        std::vector<NodeP> scalars;
        for (const NodeP& factor : n->args) {
          if (IsScalar(*factor)) {
            scalars.push_back(factor);
            continue;
          }
          std::optional<NodeP> m = MatrixValue(factor);
          if (!m) return std::nullopt;
          if (!product) {
            product = m;
            continue;
          }
          const Node& a = **product;
          const Node& b = **m;
          if (a.cols != b.rows || a.rows * b.cols > 4096) return std::nullopt;
          std::vector<NodeP> entries;
          for (int r = 0; r < a.rows; ++r) {
            for (int c = 0; c < b.cols; ++c) {
              std::vector<NodeP> terms;
              for (int k = 0; k < a.cols; ++k)
                terms.push_back(
                    Make(Kind::kMul, {entry(a, r, k), entry(b, k, c)}));
              entries.push_back(Make(Kind::kAdd, std::move(terms)));
            }
          }
          product = make(a.rows, b.cols, std::move(entries));
        }
        if (!product) return std::nullopt;
        if (scalars.empty()) return product;
        NodeP scale =
            scalars.size() == 1 ? scalars[0] : Make(Kind::kMul, scalars);
        std::vector<NodeP> entries;
        for (const NodeP& e : (*product)->args)
          entries.push_back(Make(Kind::kMul, {scale, e}));
        return make((*product)->rows, (*product)->cols, std::move(entries));
      }
      default:
        return std::nullopt;
    }
  }

  static bool AllTuples(const Node& list) {
    return std::all_of(list.args.begin(), list.args.end(), [](const NodeP& a) {
      return a->kind == Kind::kTuple && a->args.size() >= 2;
    });
  }
  static bool AllLabelled(const Node& list) {
    return std::all_of(list.args.begin(), list.args.end(),
                       [](const NodeP& a) { return IsLabelled(*a); });
  }

  // A name for an answer: x, a_1, AB (a segment), |AB|, S_1/S (a ratio), f(x),
  // or a tuple of names.
  static bool IsLabel(const Node& n) {
    switch (n.kind) {
      case Kind::kSymbol:
        return true;
      case Kind::kAbs:
        return IsLabel(*n.args[0]);
      case Kind::kConstant:
        return n.name == "e" || n.name == "i";  // letters used as names
      case Kind::kMul:
      case Kind::kTuple:
        for (const NodeP& a : n.args) {
          const Node& f = a->kind == Kind::kInv ? *a->args[0] : *a;
          if (!IsLabel(f)) return false;
        }
        return !n.args.empty();
      default:
        return false;
    }
  }
  static bool IsLabelled(const Node& n) {
    return n.kind == Kind::kRelation && (n.name == "=" || n.name == "in") &&
           IsLabel(*n.args[0]);
  }
  // "\log_2 8 = 3": a computation without variables on the left of "=".
  static bool IsComputation(const Node& n) {
    if (n.kind != Kind::kRelation || n.name != "=" || !IsScalar(*n.args[0]))
      return false;
    std::set<std::string> symbols;
    Symbols(*n.args[0], &symbols);
    return symbols.empty();
  }

  // ---------------------------------------------------- relations by value
  // Two relations between scalars are the same when lhs - rhs of one is a
  // constant non-zero multiple of the other's (any sign for = and !=, a
  // positive one for the same inequality, a negative one for the flipped
  // inequality): y = -x/2 + 3/4 and 2x + 4y - 3 = 0; -x > -1 and 1 > x.
  bool EquivalentRelations(const Node& gold, const Node& pred) {
    static const std::set<std::string> kOps = {"=", "!=", "<", "<=", ">", ">="};
    if (kOps.count(gold.name) == 0 || kOps.count(pred.name) == 0) return false;
    for (const Node* r : {&gold, &pred}) {
      if (!IsScalar(*r->args[0]) || !IsScalar(*r->args[1])) return false;
    }
    const bool gold_equation = gold.name == "=" || gold.name == "!=";
    const bool pred_equation = pred.name == "=" || pred.name == "!=";
    if (gold_equation != pred_equation) return false;
    int wanted_sign = 0;  // of the ratio: 0 for any
    if (gold_equation) {
      if (gold.name != pred.name) return false;
    } else {
      const bool gold_strict = gold.name == "<" || gold.name == ">";
      const bool pred_strict = pred.name == "<" || pred.name == ">";
      if (gold_strict != pred_strict) return false;
      const bool gold_less = gold.name[0] == '<',
                 pred_less = pred.name[0] == '<';
      wanted_sign = gold_less == pred_less ? 1 : -1;
    }
    std::set<std::string> gold_symbols, pred_symbols;
    Symbols(gold, &gold_symbols);
    Symbols(pred, &pred_symbols);
    if (gold_symbols != pred_symbols || gold_symbols.empty()) return false;
    NodeP a =
        Make(Kind::kAdd, {gold.args[0], Make(Kind::kNeg, {gold.args[1]})});
    NodeP b =
        Make(Kind::kAdd, {pred.args[0], Make(Kind::kNeg, {pred.args[1]})});
    std::mt19937_64 rng(0x5eed);
    std::uniform_real_distribution<double> value(0.3, 2.7);
    std::optional<double> ratio;
    int compared = 0;
    for (int attempt = 0; attempt < 16 && compared < 6; ++attempt) {
      Env env;
      for (const std::string& name : gold_symbols) env[name] = value(rng);
      const Complex x = Eval(*a, env, budget_);
      const Complex y = Eval(*b, env, budget_);
      if (!std::isfinite(x.real()) || !std::isfinite(y.real()) ||
          std::abs(x.imag()) > 1e-12 || std::abs(y.imag()) > 1e-12)
        continue;
      if (std::abs(x.real()) < 1e-12 || std::abs(y.real()) < 1e-12) {
        // A zero on one side only: not proportional.
        if (std::abs(x.real()) < 1e-12 && std::abs(y.real()) < 1e-12) continue;
        return false;
      }
      const double r = x.real() / y.real();
      if (ratio &&
          std::abs(r - *ratio) > 1e-7 * std::max(1.0, std::abs(*ratio)))
        return false;
      ratio = r;
      ++compared;
    }
    if (compared < 3 || !ratio) return false;
    return wanted_sign == 0 || (wanted_sign > 0) == (*ratio > 0);
  }

  // ---------------------------------------------------- sets of reals
  // Whether `n` describes a set of real numbers: an interval, a union, an
  // inequality or a chain of them ("1 <= |z| <= 3/2"), "z \in S", "x < 0 or
  // x > 1".
  static bool IsRealSet(const Node& n) {
    switch (n.kind) {
      case Kind::kInterval:
        return true;
      case Kind::kUnion:
        for (const NodeP& a : n.args) {
          // (a, b) in a union is an open interval.
          if (!IsRealSet(*a) &&
              !(a->kind == Kind::kTuple && a->args.size() == 2))
            return false;
        }
        return true;
      case Kind::kRelation:
        if (n.name == "in") return IsRealSet(*n.args[1]);
        return n.name != "=" && IsScalar(*n.args[0]) && IsScalar(*n.args[1]);
      case Kind::kList:
        if (n.name == ",") return false;
        for (const NodeP& a : n.args) {
          if (!IsRealSet(*a)) return false;
        }
        return true;
      default:
        return false;
    }
  }

  // Whether x (the value of `variable`) is in the set; nullopt where a side
  // cannot be evaluated.
  std::optional<bool> Member(const Node& n, const std::string& variable,
                             double x) {
    budget_.Step();
    switch (n.kind) {
      case Kind::kInterval:
      case Kind::kTuple: {
        const Complex lo = Eval(*n.args[0], {}, budget_);
        const Complex hi = Eval(*n.args[1], {}, budget_);
        if (std::isnan(lo.real()) || std::isnan(hi.real())) return std::nullopt;
        const bool above = n.left_closed ? x >= lo.real() : x > lo.real();
        const bool below = n.right_closed ? x <= hi.real() : x < hi.real();
        return above && below;
      }
      case Kind::kUnion:
      case Kind::kList: {
        const bool all = n.kind == Kind::kList && n.name == "and";
        for (const NodeP& a : n.args) {
          std::optional<bool> in = Member(*a, variable, x);
          if (!in) return std::nullopt;
          if (*in != all) return !all;
        }
        return all;
      }
      case Kind::kRelation: {
        if (n.name == "in") return Member(*n.args[1], variable, x);
        Env env;
        if (!variable.empty()) env[variable] = x;
        // With a subject ("f(x)" in 0 < f(x) < 1) the subject takes the value.
        const auto side = [&](const Node& e) {
          if (subject_ != nullptr && SameTree(e, *subject_))
            return Complex(x, 0);
          return Eval(e, env, budget_);
        };
        const Complex l = side(*n.args[0]);
        const Complex r = side(*n.args[1]);
        if (std::isnan(l.real()) || std::isnan(r.real()) ||
            std::abs(l.imag()) > 1e-9 || std::abs(r.imag()) > 1e-9)
          return std::nullopt;
        const double a = l.real(), b = r.real();
        const double slack = 1e-12 * std::max({1.0, std::abs(a), std::abs(b)});
        if (n.name == "<") return a < b - slack;
        if (n.name == "<=") return a <= b + slack;
        if (n.name == ">") return a > b + slack;
        if (n.name == ">=") return a >= b - slack;
        if (n.name == "!=") return std::abs(a - b) > slack;
        return std::nullopt;
      }
      default:
        return std::nullopt;
    }
  }

  // Values where a set's membership may change: every constant of the
  // expressions (and its negative, for |x|).
  void Criticals(const Node& n, std::vector<double>* out) {
    std::set<std::string> symbols;
    Symbols(n, &symbols);
    if (symbols.empty() && IsScalar(n)) {
      const Complex v = Eval(n, {}, budget_);
      if (std::isfinite(v.real()) && out->size() < 64) {
        out->push_back(v.real());
        out->push_back(-v.real());
      }
      if (n.kind == Kind::kNumber || n.kind == Kind::kConstant) return;
    }
    for (const NodeP& a : n.args) Criticals(*a, out);
  }

  std::optional<bool> SameRealSet(const Node& gold, const Node& pred) {
    // Two intervals or unions compare by their ends (above).
    const auto plain = [](const Node& n) {
      return n.kind == Kind::kInterval || n.kind == Kind::kUnion;
    };
    if (plain(gold) && plain(pred)) return std::nullopt;
    // An open interval may be written as a pair: (0, 1) against 0 < x < 1.
    const auto as_set = [](const Node& n, const Node& other) {
      return IsRealSet(n) || (n.kind == Kind::kTuple && n.args.size() == 2 &&
                              other.kind != Kind::kTuple && IsRealSet(other));
    };
    if (!as_set(gold, pred) || !as_set(pred, gold)) return std::nullopt;
    // A reference written as a set (an interval or union) is not answered by
    // an inequality: math-verify's default (its allow_set_relation_comp),
    // whose test suite asserts it. An inequality reference is answered by an
    // equivalent set.
    const auto is_inequality = [](const Node& n) {
      return (n.kind == Kind::kRelation && n.name != "in") ||
             n.kind == Kind::kList;
    };
    if (!is_inequality(gold) && is_inequality(pred)) return false;
    std::set<std::string> symbols;
    Symbols(gold, &symbols);
    Symbols(pred, &symbols);
    // More than one variable: the set is of one expression compared with
    // constants throughout ("0 < f(x) < 1" against "(0, 1)").
    subject_ = nullptr;
    if (symbols.size() > 1) {
      std::set<std::string> gold_symbols, pred_symbols;
      Symbols(gold, &gold_symbols);
      Symbols(pred, &pred_symbols);
      if (!gold_symbols.empty() && !pred_symbols.empty()) return std::nullopt;
      subject_ = Subject(gold_symbols.empty() ? pred : gold);
      if (subject_ == nullptr) return std::nullopt;
    }
    struct Reset {
      const Node** subject;
      ~Reset() { *subject = nullptr; }
    } reset{&subject_};
    const std::string variable =
        symbols.size() == 1 ? *symbols.begin() : std::string();
    std::vector<double> criticals = {0.0};
    Criticals(gold, &criticals);
    Criticals(pred, &criticals);
    std::sort(criticals.begin(), criticals.end());
    criticals.erase(std::unique(criticals.begin(), criticals.end()),
                    criticals.end());
    std::vector<double> points;
    for (size_t k = 0; k < criticals.size(); ++k) {
      const double c = criticals[k];
      const double delta = 1e-7 * std::max(1.0, std::abs(c));
      points.insert(points.end(), {c, c - delta, c + delta});
      if (k + 1 < criticals.size())
        points.push_back((c + criticals[k + 1]) / 2);
    }
    points.insert(points.end(), {criticals.front() - 1, criticals.back() + 1,
                                 -1e6, 1e6, 0.7310585, -2.2360679, 3.1415926});
    int decided = 0;
    for (double x : points) {
      std::optional<bool> a = Member(gold, variable, x);
      std::optional<bool> b = Member(pred, variable, x);
      if (!a || !b) continue;
      if (*a != *b) return false;
      ++decided;
    }
    if (decided < 3) return std::nullopt;
    return true;
  }

  // The one expression with variables that a relation or chain compares with
  // constants; nullptr when there is none or more than one.
  static const Node* Subject(const Node& n) {
    if (n.kind == Kind::kRelation) {
      std::set<std::string> l, r;
      Symbols(*n.args[0], &l);
      Symbols(*n.args[1], &r);
      if (l.empty() == r.empty()) return nullptr;
      return l.empty() ? n.args[1].get() : n.args[0].get();
    }
    if (n.kind == Kind::kList && n.name != ",") {
      const Node* subject = nullptr;
      for (const NodeP& a : n.args) {
        const Node* s = Subject(*a);
        if (s == nullptr || (subject != nullptr && !SameTree(*s, *subject)))
          return nullptr;
        subject = s;
      }
      return subject;
    }
    return nullptr;
  }

  static bool IsUnordered(const Node& n) {
    return n.kind == Kind::kSet || n.kind == Kind::kList;
  }
  static std::string Flipped(const std::string& op) {
    if (op == "<") return ">";
    if (op == ">") return "<";
    if (op == "<=") return ">=";
    if (op == ">=") return "<=";
    return op;
  }
  static NodeP Expand(const NodeP& pm) {
    const NodeP& a = pm->args[0];
    const NodeP& b = pm->args[1];
    return Make(Kind::kSet, {Make(Kind::kAdd, {a, b}),
                             Make(Kind::kAdd, {a, Make(Kind::kNeg, {b})})});
  }

  bool OpenInterval(const Node& interval, const Node& tuple) {
    return !interval.left_closed && !interval.right_closed &&
           tuple.args.size() == 2 && Ordered(interval.args, tuple.args);
  }

  bool Ordered(const std::vector<NodeP>& a, const std::vector<NodeP>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!Equal(a[i], b[i])) return false;
    }
    return true;
  }

  // Set equality: every element of each side equals some element of the
  // other (a repeated element counts once: "(3,17,3,7)" listed twice is one
  // solution).
  bool Unordered(const std::vector<NodeP>& a, const std::vector<NodeP>& b) {
    if (a.empty() != b.empty()) return false;
    if (a.size() > 64 || b.size() > 64)
      throw TooComplex{"too many elements to compare"};
    std::vector<bool> b_covered(b.size(), false);
    for (const NodeP& x : a) {
      bool found = false;
      for (size_t j = 0; j < b.size(); ++j) {
        if (found && b_covered[j]) continue;
        if (Equal(x, b[j])) {
          found = true;
          b_covered[j] = true;
        }
      }
      if (!found) return false;
    }
    return std::all_of(b_covered.begin(), b_covered.end(),
                       [](bool covered) { return covered; });
  }

  bool ScalarEqual(const Node& gold, const Node& pred) {
    std::set<std::string> gold_symbols, pred_symbols;
    Symbols(gold, &gold_symbols);
    Symbols(pred, &pred_symbols);
    if (gold_symbols != pred_symbols) return false;
    if (gold_symbols.empty()) {
      // 50% also matches 50 (the number written without its percent sign).
      if (gold.kind == Kind::kPercent && pred.kind != Kind::kPercent &&
          ScalarEqual(*gold.args[0], pred)) {
        return true;
      }
      if (pred.kind == Kind::kPercent && gold.kind != Kind::kPercent &&
          ScalarEqual(gold, *pred.args[0])) {
        return true;
      }
      bool too_large = false;
      const std::optional<Rational> a = Exact(gold, budget_, &too_large);
      const std::optional<Rational> b = Exact(pred, budget_, &too_large);
      if (too_large) {
        // Refused rather than compared in floating point.
        too_large_ = true;
        return false;
      }
      const bool decimal = HasDecimal(gold) || HasDecimal(pred);
      if (a && b) {
        if (*a == *b) return true;
        return decimal && DecimalMatch(*a, *b, RoundingPlaces(gold, pred));
      }
      const Complex x = Eval(gold, {}, budget_);
      const Complex y = Eval(pred, {}, budget_);
      if (std::isnan(x.real()) || std::isnan(y.real()) ||
          std::isnan(x.imag()) || std::isnan(y.imag())) {
        return false;
      }
      // Values too large for doubles (2^{4950}) are only equal when written the
      // same way, which the caller has already checked; infinities must be
      // meant.
      const bool finite = std::isfinite(x.real()) && std::isfinite(y.real());
      if (!finite && !(HasInfinity(gold) && HasInfinity(pred))) return false;
      if (Close(x, y, 1e-9)) return true;
      return decimal && finite && DecimalMatch(x.real(), y.real()) &&
             DecimalMatch(x.imag(), y.imag());
    }
    // Expressions in variables: equal at random points.
    std::mt19937_64 rng(0x5eed);
    std::uniform_real_distribution<double> value(0.3, 2.7);
    int compared = 0;
    for (int attempt = 0; attempt < 12 && compared < 6; ++attempt) {
      Env env;
      for (const std::string& name : gold_symbols) env[name] = value(rng);
      const Complex x = Eval(gold, env, budget_);
      const Complex y = Eval(pred, env, budget_);
      const bool x_ok = std::isfinite(x.real()) && std::isfinite(x.imag());
      const bool y_ok = std::isfinite(y.real()) && std::isfinite(y.imag());
      if (!x_ok && !y_ok) continue;
      if (x_ok != y_ok || !Close(x, y, 1e-7)) return false;
      ++compared;
    }
    if (compared >= 3) return true;
    // Not evaluable (a sum to n): the same function with equal arguments.
    if (compared == 0 && gold.kind == Kind::kFunction &&
        pred.kind == Kind::kFunction && gold.name == pred.name &&
        gold.args.size() == pred.args.size()) {
      for (size_t i = 0; i < gold.args.size(); ++i) {
        if (!Equal(gold.args[i], pred.args[i])) return false;
      }
      return true;
    }
    return false;
  }

  Budget& budget_;

 public:
  // Whether a value was too large to compare exactly (and so not compared).
  bool too_large() const { return too_large_; }

 private:
  bool too_large_ = false;
  const Node* subject_ = nullptr;  // see SameRealSet
};

}  // namespace

TreeComparison CompareTrees(const NodeP& gold, const NodeP& pred,
                            Budget& budget) {
  Comparer comparer(budget);
  TreeComparison result;
  result.equal = comparer.Equal(gold, pred);
  result.too_large = comparer.too_large();
  return result;
}

}  // namespace microrl::reward::math
