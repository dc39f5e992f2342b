#ifndef MICRORL_TESTS_SUPPORT_RANKS_H_
#define MICRORL_TESTS_SUPPORT_RANKS_H_

// Data-parallel ranks as threads of one test process: a Gloo job on loopback.
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "common/distributed/communicator.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace microrl::testing {

// Rank `rank` of a job of `world` whose rendezvous is 127.0.0.1:`port`.
inline distributed::LaunchEnv LoopbackRank(int rank, int world, int port) {
  distributed::LaunchEnv launch;
  launch.rank = rank;
  launch.local_rank = rank;
  launch.world_size = world;
  launch.local_world_size = world;
  launch.master_addr = "127.0.0.1";
  launch.master_port = port;
  launch.launcher = "test";
  return launch;
}

// Runs `body(rank, communicator)` on `world` threads at once, each a rank of
// one Gloo job on loopback (collectives time out after 60 s), and returns when
// all have.
inline void RunRanks(
    int world, const std::function<void(int, distributed::Communicator&)>& body,
    distributed::CommunicatorOptions options = {}) {
  options.timeout = absl::Seconds(60);
  const int port = PickFreePort();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      absl::StatusOr<std::unique_ptr<distributed::Communicator>> c =
          distributed::Communicator::Create(LoopbackRank(r, world, port),
                                            options);
      ASSERT_TRUE(c.ok()) << c.status();
      EXPECT_STREQ((*c)->backend(), "gloo");
      body(r, **c);
    });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace microrl::testing

#endif  // MICRORL_TESTS_SUPPORT_RANKS_H_
