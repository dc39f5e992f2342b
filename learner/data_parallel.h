#ifndef MICRORL_LEARNER_DATA_PARALLEL_H_
#define MICRORL_LEARNER_DATA_PARALLEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/distributed/communicator.h"
#include "common/model/lora.h"
#include "learner/config.h"
#include "learner/generation.h"
#include "learner/reward_client.h"
#include "learner/run_setup.h"

// What the learner's data-parallel ranks (Mode A of docs/scaling.md) agree on
// beyond the update itself: each rank's share of a step's prompts, the step's
// rollouts as a whole, whether every rank's phase succeeded, and that the
// adapters stayed equal. Every function is a collective: all ranks call it in
// the same order.
namespace microrl::learner {

// A rank's own settings: its GPU (a plain "cuda" becomes cuda:<local rank>)
// and, with distributed.rollout_port_per_rank, its own rollout server (port +
// local rank).
absl::StatusOr<TrainConfig> RankConfig(const TrainConfig& config,
                                       const distributed::LaunchEnv& launch);

// Rank `rank` of `world`'s contiguous share [begin, end) of `count` items.
struct Share {
  int64_t begin = 0;
  int64_t end = 0;
};
Share ShareOf(int64_t count, int rank, int world);

// A step's rollouts over every rank.
struct SharedRollouts {
  // All groups in order; another rank's completions carry completion_tokens
  // and truncated only (no token ids).
  std::vector<CompletionGroup> groups;
  std::vector<RewardResult> scores;  // problem-major, one per completion
  int64_t off_policy_refused = 0;    // summed over ranks
};

// Exchanges this rank's groups [first_group, first_group + groups.size()) of
// `total_groups` (each of `group_size` completions) and their scores:
// afterwards every rank holds every group's rewards, correctness, reward
// components, lengths and truncation. Reward component names must agree
// across the ranks that have groups (one reward service answers them all); a
// rank without groups learns none.
absl::StatusOr<SharedRollouts> ShareRollouts(
    distributed::Communicator& comm, int64_t total_groups, int64_t first_group,
    int64_t group_size, const std::vector<CompletionGroup>& groups,
    const std::vector<RewardResult>& scores, int64_t off_policy_refused);

// What the ranks agreed after a phase.
struct Agreement {
  // This rank's error; or, if another rank failed, an Aborted naming that.
  absl::Status status;
  bool stopping = false;       // some rank was asked to stop
  double elapsed_seconds = 0;  // the largest of the ranks' (one time budget)
};
// Every rank says whether its phase succeeded, whether it is stopping, and
// its training time so far.
absl::StatusOr<Agreement> Agree(distributed::Communicator& comm,
                                const absl::Status& local, bool stopping,
                                double elapsed_seconds);

// A SHA-256 (hex) on every rank against rank 0's: a DataLoss error on every
// rank, naming `what`, if any differs.
absl::Status SameOnEveryRank(distributed::Communicator& comm,
                             const std::string& sha256_hex,
                             const std::string& what);

// SHA-256 of the adapter's weights on every rank against rank 0's: a
// DataLoss error on every rank if any differs.
absl::Status CheckReplicasEqual(distributed::Communicator& comm,
                                const model::LoraAdapter& adapter);

// Ranks sharing rollout servers (rollout.addresses): rank 0 publishes for
// all. Every rank passes how its part went (rank 0: the publish, `version` the
// version it loaded); returns rank 0's version on every rank, or this rank's
// error, or an Aborted if another rank failed.
absl::StatusOr<uint64_t> ShareVersion(distributed::Communicator& comm,
                                      uint64_t version,
                                      const absl::Status& local);

// Element-wise sums over the ranks, in place (every rank the same length).
absl::Status SumOverRanks(distributed::Communicator& comm,
                          std::vector<int64_t>& values);

// How the ranks' generation went, the worst of them: every rank served, some
// rank's request was refused for its adapter version (FAILED_PRECONDITION: a
// server lost the adapter, so rank 0 publishes it again and all retry), some
// rank is stopping (CANCELLED), or some rank failed otherwise.
enum class GenerateOutcome {
  kServed = 0,
  kRefused = 1,
  kStopping = 2,
  kFailed = 3
};
absl::StatusOr<GenerateOutcome> AgreeOnGenerate(distributed::Communicator& comm,
                                                const absl::Status& local);

// A data-parallel rank's own settings (RankConfig) and the job's collectives,
// joined (the rendezvous and the self-test). Refuses fewer prompts per step
// than ranks, and rollout.colocated with rollout.addresses (ranks sharing
// servers cannot each put them to sleep).
struct RankSetup {
  TrainConfig config;
  std::unique_ptr<distributed::Communicator> comm;
};
absl::StatusOr<RankSetup> JoinRanks(const TrainConfig& config,
                                    const distributed::LaunchEnv& launch);

// Rank 0 opens the run directory (its lock, config.yaml; the newest checkpoint
// with `resume`) and tells the others whether it could and which checkpoint
// they resume from; a rank whose configuration (a hash of the resolved YAML of
// `config`, before RankConfig) differs from rank 0's refuses. The other ranks'
// RunDirectory has the path and checkpoint only (no lock).
absl::StatusOr<RunDirectory> OpenSharedRunDirectory(
    distributed::Communicator& comm, const TrainConfig& config, bool resume);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_DATA_PARALLEL_H_
