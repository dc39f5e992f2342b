// The sampler's steps against direct host computations, and its sampling
// frequencies against the softmax it samples from.
#include "rollout_server/sampler.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "gtest/gtest.h"

namespace microrl::rollout {
namespace {

TEST(SamplerTest, RowUniformIsInOpenUnitIntervalAndKeyedBySeedAndPosition) {
  double sum = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double u = RowUniform(1234, i);
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.01);
  EXPECT_EQ(RowUniform(1, 5), RowUniform(1, 5));
  EXPECT_NE(RowUniform(1, 5), RowUniform(1, 6));
  EXPECT_NE(RowUniform(1, 5), RowUniform(2, 5));
}

TEST(SamplerTest, NeverSamplesATruncatedToken) {
  at::manual_seed(6);
  const int64_t n = 2000;
  const at::Tensor logits = at::randn({1, 30}).repeat({n, 1});
  std::vector<RowSampling> rows(n);
  for (int64_t i = 0; i < n; ++i) {
    rows[i].top_k = 3;
    rows[i].seed = i;
  }
  const at::Tensor allowed = std::get<1>(at::topk(logits[0], 3));
  const SampleResult result = Sample(logits, rows);
  EXPECT_TRUE(at::isin(result.tokens, allowed).all().item<bool>());
  // All three are drawn.
  EXPECT_EQ(std::get<0>(at::_unique(result.tokens)).size(0), 3);
}

TEST(SamplerTest, TopKKeepsTheKLargestPerRow) {
  at::manual_seed(3);
  const at::Tensor scaled = at::randn({3, 40});
  const at::Tensor masked = TopKMask(scaled, {5, 0, 40});
  const at::Tensor kept = at::isfinite(masked).sum(1);
  EXPECT_EQ(kept[0].item<int64_t>(), 5);
  EXPECT_EQ(kept[1].item<int64_t>(), 40);  // off
  EXPECT_EQ(kept[2].item<int64_t>(), 40);  // k >= vocab: off
  const at::Tensor top5 = std::get<1>(at::topk(scaled[0], 5));
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_TRUE(
        std::isfinite(masked[0][top5[i].item<int64_t>()].item<float>()));
  }
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingP) {
  at::manual_seed(4);
  const at::Tensor scaled = at::randn({4, 30}) * 2;
  const std::vector<double> ps = {0.5, 0.9, 1.0, 1e-6};
  const at::Tensor masked = TopPMask(scaled, ps);
  for (int64_t row = 0; row < 4; ++row) {
    // The host reference: sort, accumulate until the mass reaches p.
    const at::Tensor probs = at::softmax(scaled[row], 0);
    std::vector<std::pair<float, int64_t>> order;
    for (int64_t i = 0; i < 30; ++i)
      order.emplace_back(probs[i].item<float>(), i);
    std::sort(order.rbegin(), order.rend());
    double mass = 0;
    std::vector<bool> keep(30, false);
    for (const auto& [p, i] : order) {
      if (mass >= ps[row]) break;
      keep[i] = true;
      mass += p;
    }
    for (int64_t i = 0; i < 30; ++i) {
      EXPECT_EQ(std::isfinite(masked[row][i].item<float>()), keep[i])
          << row << " " << i;
    }
  }
}

// The CPU's selection (TopPMask) keeps exactly the tokens the sort keeps, on
// rows from flat to peaked, after a top-k mask, and at p from tiny to 1.
TEST(SamplerTest, TopPSelectionKeepsWhatTheSortKeeps) {
  at::manual_seed(8);
  const int64_t rows = 48;
  const int64_t vocab = 5000;
  at::Tensor scaled = at::randn({rows, vocab});
  std::vector<double> ps(rows);
  const std::vector<double> choices = {1e-6, 0.1, 0.5, 0.9, 0.95, 0.999, 1.0};
  for (int64_t row = 0; row < rows; ++row) {
    scaled[row].mul_(0.05 + 0.25 * static_cast<double>(row % 16));
    ps[row] = choices[row % choices.size()];
  }
  std::vector<int64_t> top_k(rows, 0);
  for (int64_t row = 0; row < rows; row += 5) top_k[row] = 100;
  scaled = TopKMask(scaled, top_k);
  const at::Tensor by_selection = TopPMask(scaled, ps);
  const at::Tensor by_sort = TopPMaskBySort(scaled, ps);
  EXPECT_TRUE(at::equal(at::isfinite(by_selection), at::isfinite(by_sort)));
  EXPECT_TRUE(at::equal(at::where(at::isfinite(by_selection), by_selection, 0),
                        at::where(at::isfinite(by_sort), by_sort, 0)));
  // Not a vacuous comparison: the rows keep from one token to all of them.
  const at::Tensor kept = at::isfinite(by_selection).sum(1);
  EXPECT_EQ(kept.min().item<int64_t>(), 1);
  EXPECT_EQ(kept.max().item<int64_t>(), vocab);
}

// Ties at the nucleus's floor are all kept, and the kept mass reaches p.
TEST(SamplerTest, TopPSelectionKeepsEveryTieAtTheFloor) {
  // Ten tokens of one logit and ten lower: p = 0.3 needs some of the ten.
  at::Tensor scaled = at::zeros({1, 20});
  scaled.narrow(1, 10, 10).fill_(-3.0);
  const at::Tensor masked = TopPMask(scaled, {0.3});
  const at::Tensor kept = at::isfinite(masked[0]);
  EXPECT_TRUE(kept.narrow(0, 0, 10).all().item<bool>());
  EXPECT_FALSE(kept.narrow(0, 10, 10).any().item<bool>());
}

TEST(SamplerTest, SampledFrequenciesFollowTheSoftmaxAtTheTemperature) {
  const int64_t n = 40000;
  const at::Tensor logits = at::tensor({0.0f, 1.0f, 2.0f, 3.0f}).repeat({n, 1});
  std::vector<RowSampling> rows(n);
  for (int64_t i = 0; i < n; ++i) {
    rows[i].temperature = 2.0;
    rows[i].seed = 1000 + i;
  }
  const SampleResult result = Sample(logits, rows);
  const at::Tensor expected = at::softmax(at::tensor({0.0, 0.5, 1.0, 1.5}), 0);
  const at::Tensor counts =
      at::bincount(result.tokens, {}, 4).to(at::kDouble) / n;
  for (int64_t v = 0; v < 4; ++v) {
    EXPECT_NEAR(counts[v].item<double>(), expected[v].item<double>(), 0.01)
        << v;
  }
  // Log-probs are log softmax(logits / T) of the sampled token.
  const at::Tensor log_expected = at::log(expected).to(at::kFloat);
  EXPECT_TRUE(at::allclose(result.logprobs,
                           log_expected.index_select(0, result.tokens), 1e-5,
                           1e-6));
}

// The CPU's draw (selection and one scan per row) picks the tokens the chain
// of masks, softmax, cumulative sum and search picks, for the same uniforms:
// at temperatures, top-k, top-p, both, neither, and greedy rows among them.
TEST(SamplerTest, CpuDrawPicksWhatTheMaskChainPicks) {
  at::manual_seed(8);
  const int64_t n = 600;
  const int64_t vocab = 300;
  const at::Tensor logits = at::randn({n, vocab}) * 3;
  std::vector<RowSampling> rows(n);
  std::vector<double> uniforms(n);
  std::vector<int64_t> top_k(n);
  std::vector<double> top_p(n);
  std::vector<float> inverse_temperature(n);
  for (int64_t i = 0; i < n; ++i) {
    RowSampling& row = rows[i];
    row.temperature = i % 7 == 6 ? 0.0 : 0.5 + 0.25 * (i % 5);
    row.top_k = i % 3 == 0 ? 0 : (i % 3 == 1 ? 1 + i % 40 : vocab + 1);
    row.top_p = i % 4 == 0 ? 1.0 : 0.05 + 0.3 * (i % 4);
    row.seed = 77 + i;
    row.position = i % 11;
    uniforms[i] = RowUniform(row.seed, row.position);
    top_k[i] = row.top_k;
    top_p[i] = row.top_p;
    inverse_temperature[i] =
        row.temperature == 0.0 ? 1.0f : static_cast<float>(1 / row.temperature);
  }
  const at::Tensor scaled =
      logits * at::tensor(inverse_temperature).unsqueeze(1);
  const at::Tensor cdf = at::cumsum(
      at::softmax(TopPMaskBySort(TopKMask(scaled, top_k), top_p), 1), 1);
  const at::Tensor target = at::tensor(uniforms).to(at::kFloat).unsqueeze(1) *
                            cdf.narrow(1, vocab - 1, 1);
  const at::Tensor want =
      at::searchsorted(cdf, target).squeeze(1).clamp_max(vocab - 1);
  const at::Tensor argmax = logits.argmax(1);
  const SampleResult result = Sample(logits, rows);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t expected = rows[i].temperature == 0.0
                                 ? argmax[i].item<int64_t>()
                                 : want[i].item<int64_t>();
    EXPECT_EQ(result.tokens[i].item<int64_t>(), expected) << "row " << i;
  }
  EXPECT_TRUE(
      at::allclose(result.logprobs, at::log_softmax(scaled, 1)
                                        .gather(1, result.tokens.unsqueeze(1))
                                        .squeeze(1)));
}

TEST(SamplerTest,
     LogprobsAreReportedBeforeTruncationAndGreedyRowsTakeTheArgmax) {
  at::manual_seed(5);
  const at::Tensor logits = at::randn({3, 25});
  std::vector<RowSampling> rows(3);
  rows[0].temperature = 0.0;  // greedy
  rows[1].temperature = 0.5;
  rows[1].top_k = 1;  // truncated to the argmax
  rows[2].temperature = 1.0;
  rows[2].seed = 9;
  const SampleResult result = Sample(logits, rows);
  const at::Tensor argmax = logits.argmax(1);
  EXPECT_EQ(result.tokens[0].item<int64_t>(), argmax[0].item<int64_t>());
  EXPECT_EQ(result.tokens[1].item<int64_t>(), argmax[1].item<int64_t>());
  EXPECT_NEAR(result.logprobs[0].item<float>(),
              at::log_softmax(logits[0], 0)[argmax[0]].item<float>(), 1e-6);
  // Not 0, which the truncated distribution would give.
  EXPECT_NEAR(result.logprobs[1].item<float>(),
              at::log_softmax(logits[1] / 0.5, 0)[argmax[1]].item<float>(),
              1e-6);
  EXPECT_LT(result.logprobs[1].item<float>(), -1e-3);
  const int64_t sampled = result.tokens[2].item<int64_t>();
  EXPECT_NEAR(result.logprobs[2].item<float>(),
              at::log_softmax(logits[2], 0)[sampled].item<float>(), 1e-6);
}

}  // namespace
}  // namespace microrl::rollout
