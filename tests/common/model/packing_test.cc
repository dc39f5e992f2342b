// Packed rows (common/model/packing.h): a packed forward equals each sequence's
// own forward, with and without shared prefixes, in values and in LoRA
// gradients (gradient checkpointing on and off); bad layouts are refused.
#include "common/model/packing.h"

#include <ATen/ATen.h>
#include <torch/types.h>

#include <vector>

#include "common/model/decoder.h"
#include "gtest/gtest.h"
#include "tests/support/tiny_model.h"

namespace microrl::model {
namespace {

using ::microrl::testing::RandomAdapter;
using ::microrl::testing::TinyDecoder;

at::Tensor Ids(std::vector<int64_t> ids) { return at::tensor(ids, at::kLong); }

TEST(PackingTest, RefusesLayoutsThatDoNotTileTheRow) {
  const at::Device cpu(at::kCPU);
  EXPECT_FALSE(MakePackedLayout({{0, 3, 0, 0}}, 4, cpu).ok());  // a gap
  EXPECT_FALSE(
      MakePackedLayout({{0, 3, 0, 0}, {2, 2, 0, 0}}, 4, cpu).ok());  // overlap
  EXPECT_FALSE(MakePackedLayout({{0, 5, 0, 0}}, 4, cpu).ok());       // outside
  EXPECT_FALSE(MakePackedLayout({{0, 0, 0, 0}, {0, 4, 0, 0}}, 4, cpu).ok());
  // A prefix must be a whole segment without a prefix of its own.
  EXPECT_FALSE(MakePackedLayout({{0, 2, 0, 0}, {2, 2, 0, 1}}, 4, cpu).ok());
  EXPECT_FALSE(
      MakePackedLayout({{0, 2, 0, 0}, {2, 1, 0, 2}, {3, 1, 2, 1}}, 4, cpu)
          .ok());
  absl::StatusOr<PackedLayout> good =
      MakePackedLayout({{0, 2, 0, 0}, {2, 1, 0, 2}, {3, 1, 0, 2}}, 4, cpu);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(at::equal(good->positions, Ids({0, 1, 2, 2}).view({1, 4})));
}

// Two prompts, the first shared by three continuations (one of them a single
// token), the second by one, and a sequence of its own: as one packed row and
// one by one.
TEST(PackingTest, PackedRowWithSharedPrefixesEqualsEachSequenceAlone) {
  std::unique_ptr<Decoder> decoder = TinyDecoder();
  std::unique_ptr<LoraAdapter> adapter = RandomAdapter(decoder->config());
  const std::vector<int64_t> prompt_a = {3, 17, 5, 9};
  const std::vector<int64_t> prompt_b = {42, 1};
  const std::vector<std::vector<int64_t>> continuations_a = {
      {8, 9, 10}, {12}, {40, 41, 42, 43, 44}};
  const std::vector<int64_t> continuation_b = {7, 7};
  const std::vector<int64_t> alone = {4, 30, 2, 11, 6, 6};
  // Row: prompt_a, its continuations, alone, prompt_b, its continuation.
  std::vector<int64_t> row(prompt_a);
  std::vector<PackedSegment> segments = {{0, 4, 0, 0}};
  std::vector<std::pair<int64_t, std::vector<int64_t>>> expected;  // begin, ids
  for (const auto& c : continuations_a) {
    segments.push_back({static_cast<int64_t>(row.size()),
                        static_cast<int64_t>(c.size()), 0, 4});
    std::vector<int64_t> whole(prompt_a);
    whole.insert(whole.end(), c.begin(), c.end());
    expected.emplace_back(row.size(), whole);
    row.insert(row.end(), c.begin(), c.end());
  }
  segments.push_back({static_cast<int64_t>(row.size()), 6, 0, 0});
  expected.emplace_back(row.size(), alone);
  row.insert(row.end(), alone.begin(), alone.end());
  const int64_t b_begin = static_cast<int64_t>(row.size());
  segments.push_back({b_begin, 2, 0, 0});
  row.insert(row.end(), prompt_b.begin(), prompt_b.end());
  segments.push_back({static_cast<int64_t>(row.size()), 2, b_begin, 2});
  std::vector<int64_t> whole_b(prompt_b);
  whole_b.insert(whole_b.end(), continuation_b.begin(), continuation_b.end());
  expected.emplace_back(row.size(), whole_b);
  row.insert(row.end(), continuation_b.begin(), continuation_b.end());

  absl::StatusOr<PackedLayout> layout = MakePackedLayout(
      segments, static_cast<int64_t>(row.size()), at::Device(at::kCPU));
  ASSERT_TRUE(layout.ok()) << layout.status();
  // Attention buckets by own length: 6, 5, 4 | 3, 2, 2 | 1.
  ASSERT_EQ(layout->allowed.size(), 3u);
  EXPECT_EQ(layout->allowed[0].size(0), 3);
  EXPECT_EQ(layout->allowed[1].size(2), 3);
  EXPECT_EQ(layout->allowed[2].size(3), 5);  // 1 token after a 4-token prompt
  for (bool checkpointing : {false, true}) {
    SCOPED_TRACE(checkpointing ? "checkpointing" : "plain");
    RunOptions run;
    run.adapter = adapter.get();
    run.gradient_checkpointing = checkpointing;
    // The same weighted sum of every sequence's outputs on both sides, so
    // the gradients must agree too.
    absl::StatusOr<at::Tensor> packed =
        decoder->ForwardPacked(Ids(row), *layout, run);
    ASSERT_TRUE(packed.ok()) << packed.status();
    const at::Tensor weights = at::randn({packed->size(0), packed->size(1)},
                                         at::TensorOptions().dtype(at::kFloat));
    (*packed * weights).sum().backward();
    std::vector<at::Tensor> packed_grads;
    for (const at::Tensor& p : adapter->Parameters()) {
      packed_grads.push_back(p.grad().clone());
      p.mutable_grad().zero_();
    }
    at::Tensor total = at::zeros({}, at::kFloat);
    // Each sequence alone: its own rows of the packed output (a shared
    // prefix's rows once, from the first continuation).
    std::vector<bool> counted(row.size(), false);
    for (const auto& [begin, ids] : expected) {
      absl::StatusOr<at::Tensor> own =
          decoder->Forward(Ids(ids).view({1, -1}), run);
      ASSERT_TRUE(own.ok()) << own.status();
      const int64_t own_length = static_cast<int64_t>(ids.size());
      // Where the sequence's tokens are in the row: a shared prefix, then
      // its own tokens at `begin`.
      const int64_t suffix = [&]() -> int64_t {
        for (const PackedSegment& s : segments) {
          if (s.begin == begin) return s.length;
        }
        return 0;
      }();
      const int64_t prefix = own_length - suffix;
      const int64_t prefix_begin = [&]() -> int64_t {
        for (const PackedSegment& s : segments) {
          if (s.begin == begin) return s.prefix_begin;
        }
        return 0;
      }();
      for (int64_t t = 0; t < own_length; ++t) {
        const int64_t at_row =
            t < prefix ? prefix_begin + t : begin + t - prefix;
        EXPECT_LT(((*own)[0][t] - (*packed)[at_row]).abs().max().item<double>(),
                  1e-5)
            << "sequence at " << begin << ", token " << t;
        if (!counted[at_row]) {
          counted[at_row] = true;
          total = total + ((*own)[0][t] * weights[at_row]).sum();
        }
      }
    }
    total.backward();
    const std::vector<at::Tensor> parameters = adapter->Parameters();
    for (size_t i = 0; i < parameters.size(); ++i) {
      EXPECT_LT(
          (parameters[i].grad() - packed_grads[i]).abs().max().item<double>(),
          1e-5)
          << "parameter " << i;
      parameters[i].mutable_grad().zero_();
    }
  }
}

}  // namespace
}  // namespace microrl::model
