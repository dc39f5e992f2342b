// The data-parallel ranks' small agreements (learner/data_parallel.h), each
// rank a thread over Gloo on loopback: rank 0's adapter version for all, the
// worst generation outcome, sums, and digests compared with rank 0's.
#include "learner/data_parallel.h"

#include <vector>

#include "common/base/sha256.h"
#include "common/distributed/communicator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/ranks.h"

namespace microrl::learner {
namespace {

using ::testing::HasSubstr;

using ::microrl::testing::RunRanks;

TEST(DataParallelTest, ShareVersionGivesEveryRankRank0sVersionOrTheFailure) {
  std::vector<absl::StatusOr<uint64_t>> got(3, absl::UnknownError(""));
  RunRanks(3, [&](int rank, distributed::Communicator& comm) {
    // Only rank 0's version counts (the others know an older one).
    got[rank] = ShareVersion(comm, rank == 0 ? 7 : 3, absl::OkStatus());
  });
  for (const auto& v : got) {
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(*v, 7u);
  }
  RunRanks(3, [&](int rank, distributed::Communicator& comm) {
    got[rank] = ShareVersion(
        comm, 8,
        rank == 2 ? absl::UnavailableError("no server") : absl::OkStatus());
  });
  EXPECT_EQ(got[2].status().code(), absl::StatusCode::kUnavailable);
  for (int r : {0, 1}) {
    EXPECT_EQ(got[r].status().code(), absl::StatusCode::kAborted);
    EXPECT_THAT(got[r].status().message(), HasSubstr("failed to publish"));
  }
}

TEST(DataParallelTest, AgreeOnGenerateIsTheWorstOutcome) {
  auto outcome = [](std::vector<absl::Status> local) {
    std::vector<GenerateOutcome> got(local.size());
    RunRanks(static_cast<int>(local.size()),
             [&](int rank, distributed::Communicator& comm) {
               absl::StatusOr<GenerateOutcome> o =
                   AgreeOnGenerate(comm, local[rank]);
               ASSERT_TRUE(o.ok()) << o.status();
               got[rank] = *o;
             });
    for (GenerateOutcome o : got) EXPECT_EQ(o, got[0]);
    return got[0];
  };
  const absl::Status refused = absl::FailedPreconditionError("stale");
  EXPECT_EQ(outcome({absl::OkStatus(), absl::OkStatus()}),
            GenerateOutcome::kServed);
  EXPECT_EQ(outcome({absl::OkStatus(), refused, absl::OkStatus()}),
            GenerateOutcome::kRefused);
  EXPECT_EQ(outcome({refused, absl::CancelledError("stop"), absl::OkStatus()}),
            GenerateOutcome::kStopping);
  EXPECT_EQ(outcome({absl::CancelledError("stop"), absl::InternalError("x"),
                     refused}),
            GenerateOutcome::kFailed);
}

TEST(DataParallelTest, SumOverRanksAddsElementWise) {
  std::vector<std::vector<int64_t>> values = {{1, 0, 5}, {2, 4, 0}, {0, 1, 1}};
  RunRanks(3, [&](int rank, distributed::Communicator& comm) {
    ASSERT_TRUE(SumOverRanks(comm, values[rank]).ok());
  });
  for (const auto& v : values) EXPECT_EQ(v, (std::vector<int64_t>{3, 5, 6}));
}

TEST(DataParallelTest, SameOnEveryRankNamesWhatDiffers) {
  std::vector<absl::Status> got(3);
  RunRanks(3, [&](int rank, distributed::Communicator& comm) {
    got[rank] = SameOnEveryRank(comm, Sha256Hex("a,b"), "addresses");
  });
  for (const auto& s : got) EXPECT_TRUE(s.ok()) << s;
  RunRanks(3, [&](int rank, distributed::Communicator& comm) {
    got[rank] = SameOnEveryRank(comm, Sha256Hex(rank == 1 ? "b,a" : "a,b"),
                                "addresses");
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(got[r].code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(got[r].message(),
                HasSubstr("1 of 3 ranks hold addresses that differ from rank "
                          "0's"));
  }
  EXPECT_THAT(got[1].message(), HasSubstr("(this one among them)"));
  EXPECT_THAT(got[0].message(), ::testing::Not(HasSubstr("this one")));
}

}  // namespace
}  // namespace microrl::learner
