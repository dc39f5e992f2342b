#ifndef MICRORL_REWARD_SERVICE_REWARD_SERVICE_H_
#define MICRORL_REWARD_SERVICE_REWARD_SERVICE_H_

#include <memory>

#include "absl/time/time.h"
#include "common/base/thread_pool.h"
#include "common/rpc/process_identity.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "proto/reward.grpc.pb.h"
#include "reward_service/scorer.h"

namespace microrl::reward {

struct RewardServiceOptions {
  ScoreOptions
      scoring;  // weights, extraction, per-item limits and default deadline
  // Largest accepted Score batch, items.
  int max_batch_items = 8192;
  // Worker threads scoring a batch; 0: one per hardware thread.
  int threads = 0;
};

// The microrl.v1.Reward service: Score spreads a batch over a thread pool
// (each item bounded by its deadline and step limits); GetInfo reports the
// reward's configuration. Metrics, on the given registry:
//   microrl_reward_items_total{correct="true|false"}        counter
//   microrl_reward_format_total{well_formed="true|false"}   counter
//   microrl_reward_timeouts_total                          counter
//   microrl_reward_rejected_requests_total                 counter
//   (INVALID_ARGUMENT) microrl_reward_item_seconds histogram
// Thread-safe.
class RewardService final : public v1::Reward::Service {
 public:
  RewardService(const RewardServiceOptions& options,
                const rpc::ProcessIdentity& identity,
                prometheus::Registry& registry);

  grpc::Status Score(grpc::ServerContext* context,
                     const v1::ScoreRequest* request,
                     v1::ScoreResponse* response) override;
  grpc::Status GetInfo(grpc::ServerContext* context,
                       const v1::GetInfoRequest* request,
                       v1::RewardInfo* response) override;

 private:
  const RewardServiceOptions options_;
  const rpc::ProcessIdentity& identity_;
  ThreadPool pool_;
  prometheus::Counter& correct_;
  prometheus::Counter& incorrect_;
  prometheus::Counter& well_formed_;
  prometheus::Counter& malformed_;
  prometheus::Counter& timeouts_;
  prometheus::Counter& rejected_;
  prometheus::Histogram& item_seconds_;
};

}  // namespace microrl::reward

#endif  // MICRORL_REWARD_SERVICE_REWARD_SERVICE_H_
