#ifndef MICRORL_LEARNER_ROLLOUT_POOL_H_
#define MICRORL_LEARNER_ROLLOUT_POOL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "learner/generation.h"
#include "learner/rollout_client.h"

namespace microrl::learner {

struct RolloutPoolOptions {
  // Each server's client. Its retry window (retry.max_elapsed) is how long a
  // group waits for an unreachable server before it goes to another one.
  RolloutClientOptions client;
  // Generate fails when no server has answered any group for this long.
  absl::Duration max_wait = absl::Minutes(10);
};

// Several rollout servers behind one Generate (docs/scaling.md, Mode B). Each
// group (a prompt and its completions) is one request, seeded by its index in
// the whole batch (first_prompt_index), so which server serves it does not
// change what it samples, and a server keeps sharing the group's prompt
// prefill. Groups go to the server with the fewest in flight, at most
// ceil(groups / servers) each at a time. A group whose server fails it
// (unreachable past the client's retry window, a shutdown) goes back to the
// queue for another server, and that server gets no new group for a while; a
// refusal (a stale adapter, a bad request) fails the whole Generate with the
// server's status. Thread-safe; Cancel() as RolloutClient's.
class RolloutPool {
 public:
  static absl::StatusOr<std::unique_ptr<RolloutPool>> Create(
      const std::vector<std::string>& addresses,
      const RolloutPoolOptions& options);

  size_t size() const { return servers_.size(); }
  RolloutClient& server(size_t i) { return *servers_[i]; }
  const std::string& address(size_t i) const { return addresses_[i]; }

  // One group per prompt, in the prompts' order; params.first_prompt_index is
  // the first prompt's index in the batch.
  absl::StatusOr<std::vector<CompletionGroup>> Generate(
      const std::vector<PromptIds>& prompts, const GenerateParams& params);

  // What the last Generate did: groups each server completed, and groups sent
  // again after a server failed them.
  struct Dispatch {
    std::vector<int64_t> groups_per_server;
    int64_t redispatched = 0;
  };
  Dispatch last_dispatch() const;

  // The highest adapter version any server serves (GetInfo of each).
  absl::StatusOr<uint64_t> MaxAdapterVersion();

  void Cancel();

 private:
  RolloutPool(std::vector<std::string> addresses,
              std::vector<std::unique_ptr<RolloutClient>> servers,
              const RolloutPoolOptions& options)
      : addresses_(std::move(addresses)),
        servers_(std::move(servers)),
        options_(options) {}

  const std::vector<std::string> addresses_;
  std::vector<std::unique_ptr<RolloutClient>> servers_;
  const RolloutPoolOptions options_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mu_;
  Dispatch last_;  // guarded by mu_
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_ROLLOUT_POOL_H_
