#ifndef MICRORL_LEARNER_REWARD_CLIENT_H_
#define MICRORL_LEARNER_REWARD_CLIENT_H_

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/retry.h"
#include "common/rpc/security.h"
#include "proto/reward.grpc.pb.h"

namespace microrl::learner {

// What the learner sends a reward service for one completion.
struct RewardItem {
  std::string id;
  std::string prompt;
  std::string completion;
  std::string ground_truth;
  std::map<std::string, std::string> metadata;
};

// What it gets back.
struct RewardResult {
  std::string id;
  double reward = 0;
  std::map<std::string, double> components;
  bool correct = false;
  std::string extracted_answer;
  std::string reason;
};

// A client of any server implementing microrl.v1.Reward (microrl's own
// reward_service, or a user's, e.g.
// reward_service/examples/python_reward_server.py). Thread-safe.
class RewardClient {
 public:
  // `address` is host:port; each call gets `timeout`; Score is retried on
  // UNAVAILABLE per `retry`.
  static absl::StatusOr<std::unique_ptr<RewardClient>> Create(
      const std::string& address, absl::Duration timeout,
      const rpc::RetryPolicy& retry = {},
      const rpc::ClientSecurity& security = {});

  // Scores `items` in batches of at most `batch_size` (a server may cap batches
  // lower; RewardInfo.max_batch_items tells). Results come in item order. Fails
  // with the server's status, or DataLoss if a reply does not have one result
  // per item with matching ids.
  absl::StatusOr<std::vector<RewardResult>> Score(
      const std::vector<RewardItem>& items, size_t batch_size = 1024) const;

  absl::StatusOr<v1::RewardInfo> GetInfo() const;

  // For a learner that is stopping: aborts Score calls in flight and the waits
  // between their retries at once (CANCELLED), and refuses later ones.
  void Cancel();

 private:
  RewardClient(std::unique_ptr<v1::Reward::Stub> stub, absl::Duration timeout,
               const rpc::RetryPolicy& retry)
      : stub_(std::move(stub)), timeout_(timeout), retry_(retry) {}

  std::unique_ptr<v1::Reward::Stub> stub_;
  absl::Duration timeout_;
  rpc::RetryPolicy retry_;
  mutable std::mutex mu_;
  mutable std::set<grpc::ClientContext*> in_flight_;  // guarded by mu_
  bool cancelled_ = false;                            // guarded by mu_
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_REWARD_CLIENT_H_
