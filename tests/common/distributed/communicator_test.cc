#include "common/distributed/communicator.h"

#include <ATen/ATen.h>

#include <functional>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/ranks.h"
#include "tests/support/subprocess.h"

namespace microrl::distributed {
namespace {

using ::testing::HasSubstr;

using ::microrl::testing::LoopbackRank;
using ::microrl::testing::RunRanks;

TEST(CommunicatorTest, OneRankNeedsNoPeers) {
  absl::StatusOr<std::unique_ptr<Communicator>> c =
      Communicator::Create(LaunchEnv{}, {});
  ASSERT_TRUE(c.ok()) << c.status();
  at::Tensor t = at::arange(5, at::kFloat);
  ASSERT_TRUE((*c)->AllReduce({t}).ok());
  EXPECT_TRUE(at::equal(t, at::arange(5, at::kFloat)));
  EXPECT_TRUE((*c)->Barrier().ok());
}

TEST(CommunicatorTest, AllReduceSumsAcrossBucketsAndDtypes) {
  // Small buckets: the 12 tensors go out in several collectives, some
  // flattened together, one (the large one) alone.
  CommunicatorOptions options;
  options.bucket_bytes = 64;
  RunRanks(
      3,
      [](int r, Communicator& c) {
        std::vector<at::Tensor> tensors;
        for (int i = 0; i < 10; ++i)
          tensors.push_back(at::full({i + 1}, (r + 1) * (i + 1), at::kFloat));
        tensors.push_back(at::full({100}, 1.5 * r, at::kDouble));
        tensors.push_back(at::full({2, 3}, r, at::kLong));
        ASSERT_TRUE(c.AllReduce(tensors).ok());
        for (int i = 0; i < 10; ++i) {
          EXPECT_TRUE(
              at::equal(tensors[i], at::full({i + 1}, 6 * (i + 1), at::kFloat)))
              << i;
        }
        EXPECT_TRUE(at::equal(tensors[10], at::full({100}, 4.5, at::kDouble)));
        EXPECT_TRUE(at::equal(tensors[11], at::full({2, 3}, 3, at::kLong)));
      },
      options);
}

TEST(CommunicatorTest, MaxBroadcastAndBarrier) {
  RunRanks(2, [](int r, Communicator& c) {
    at::Tensor m = at::tensor({static_cast<double>(r), 5.0 - r});
    ASSERT_TRUE(c.AllReduce({m}, ReduceOp::kMax).ok());
    EXPECT_TRUE(at::equal(m, at::tensor({1.0, 5.0})));
    at::Tensor b = at::full({3}, r == 1 ? 9 : 0, at::kLong);
    ASSERT_TRUE(c.Broadcast({b}, 1).ok());
    EXPECT_TRUE(at::equal(b, at::full({3}, 9, at::kLong)));
    EXPECT_TRUE(c.Barrier().ok());
    EXPECT_FALSE(c.Broadcast({b}, 2).ok());
    EXPECT_FALSE(c.AllReduce({at::zeros({4, 4}).t()}).ok());  // not contiguous
  });
}

TEST(CommunicatorTest, MissingPeerTimesOutWithClearError) {
  // Rank 1 never joins: rank 0's rendezvous fails within the timeout.
  CommunicatorOptions options;
  options.timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Communicator>> c = Communicator::Create(
      LoopbackRank(0, 2, testing::PickFreePort()), options);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(c.status().message(), HasSubstr("rendezvous at 127.0.0.1:"));
  EXPECT_THAT(c.status().message(), HasSubstr("rank 0 of 2"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(60));
}

TEST(CommunicatorTest, NoStoreToReach) {
  // Rank 1 of 2 with nobody listening at the master's port.
  CommunicatorOptions options;
  options.timeout = absl::Seconds(2);
  absl::StatusOr<std::unique_ptr<Communicator>> c = Communicator::Create(
      LoopbackRank(1, 2, testing::PickFreePort()), options);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("rendezvous at 127.0.0.1:"));
}

TEST(CommunicatorTest, BadLaunchIsRefused) {
  EXPECT_EQ(Communicator::Create(LoopbackRank(2, 2, 1), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  LaunchEnv no_master = LoopbackRank(0, 2, 0);
  no_master.master_addr.clear();
  EXPECT_THAT(Communicator::Create(no_master, {}).status().message(),
              HasSubstr("MASTER_ADDR"));
}

}  // namespace
}  // namespace microrl::distributed
