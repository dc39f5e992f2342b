#include "learner/rollout_pool.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"

namespace microrl::learner {
namespace {

// A server that failed a group gets no new one for this long.
constexpr absl::Duration kServerPause = absl::Seconds(2);

// Failures another server may not share: the server is down, restarting or
// shutting down (then its group goes elsewhere).
bool ServerFailed(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded ||
         status.code() == absl::StatusCode::kCancelled;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RolloutPool>> RolloutPool::Create(
    const std::vector<std::string>& addresses,
    const RolloutPoolOptions& options) {
  if (addresses.empty()) {
    return absl::InvalidArgumentError("no rollout server addresses");
  }
  std::vector<std::unique_ptr<RolloutClient>> servers;
  for (const std::string& address : addresses) {
    absl::StatusOr<std::unique_ptr<RolloutClient>> client =
        RolloutClient::Create(address, options.client);
    if (!client.ok()) return client.status();
    servers.push_back(*std::move(client));
  }
  return std::unique_ptr<RolloutPool>(
      new RolloutPool(addresses, std::move(servers), options));
}

void RolloutPool::Cancel() {
  cancelled_ = true;
  for (auto& server : servers_) server->Cancel();
}

absl::StatusOr<uint64_t> RolloutPool::MaxAdapterVersion() {
  uint64_t version = 0;
  for (auto& server : servers_) {
    absl::StatusOr<v1::RolloutInfo> info = server->GetInfo();
    if (!info.ok()) return info.status();
    version = std::max<uint64_t>(version, info->adapter_version());
  }
  return version;
}

RolloutPool::Dispatch RolloutPool::last_dispatch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

absl::StatusOr<std::vector<CompletionGroup>> RolloutPool::Generate(
    const std::vector<PromptIds>& prompts, const GenerateParams& params) {
  const size_t n = prompts.size();
  const size_t m = servers_.size();
  const int64_t cap = static_cast<int64_t>((n + m - 1) / m);
  struct Server {
    int64_t in_flight = 0;
    int64_t done = 0;
    absl::Time paused_until = absl::InfinitePast();
  };
  // Shared with the request threads; guarded by `mu`.
  std::mutex mu;
  std::condition_variable changed;
  std::vector<Server> state(m);
  std::deque<size_t> pending;
  for (size_t g = 0; g < n; ++g) pending.push_back(g);
  std::vector<std::optional<CompletionGroup>> out(n);
  absl::Status refused;
  int64_t redispatched = 0;
  size_t done = 0;
  absl::Time progress = absl::Now();
  std::vector<std::thread> requests;

  auto send = [&](size_t s, size_t g) {
    GenerateParams one = params;
    one.first_prompt_index =
        params.first_prompt_index + static_cast<uint32_t>(g);
    one.request_id = absl::StrCat(params.request_id, "#", g);
    absl::StatusOr<std::vector<CompletionGroup>> result =
        servers_[s]->Generate({prompts[g]}, one);
    std::lock_guard<std::mutex> lock(mu);
    --state[s].in_flight;
    if (result.ok() && result->size() == 1) {
      out[g] = std::move((*result)[0]);
      ++state[s].done;
      ++done;
      progress = absl::Now();
    } else if (!result.ok() && ServerFailed(result.status()) && refused.ok() &&
               !cancelled_) {
      MRL_LOG(WARNING) << "rollout server " << addresses_[s] << " failed group "
                       << g << " (" << result.status().message()
                       << "); sending it to another server";
      pending.push_front(g);
      ++redispatched;
      state[s].paused_until = absl::Now() + kServerPause;
    } else if (refused.ok()) {
      refused = cancelled_    ? absl::CancelledError("stopping")
                : result.ok() ? absl::InternalError(absl::StrCat(
                                    addresses_[s], " answered ", result->size(),
                                    " groups for one prompt"))
                              : result.status();
    }
    changed.notify_all();
  };

  {
    std::unique_lock<std::mutex> lock(mu);
    while (done < n && refused.ok()) {
      const absl::Time now = absl::Now();
      // The least-loaded server that may take a group now.
      while (!pending.empty()) {
        std::optional<size_t> best;
        for (size_t s = 0; s < m; ++s) {
          if (state[s].paused_until > now || state[s].in_flight >= cap)
            continue;
          if (!best || state[s].in_flight < state[*best].in_flight) best = s;
        }
        if (!best) break;
        const size_t g = pending.front();
        pending.pop_front();
        ++state[*best].in_flight;
        requests.emplace_back(send, *best, g);
      }
      int64_t in_flight = 0;
      absl::Time wake = absl::InfiniteFuture();
      for (const Server& s : state) {
        in_flight += s.in_flight;
        if (s.paused_until > now) wake = std::min(wake, s.paused_until);
      }
      if (in_flight == 0 && now - progress > options_.max_wait) {
        refused = absl::UnavailableError(absl::StrCat(
            "no rollout server served a group for ",
            absl::FormatDuration(options_.max_wait), " (", m, " servers)"));
        break;
      }
      if (wake == absl::InfiniteFuture()) {
        changed.wait(lock);
      } else {
        changed.wait_for(lock, absl::ToChronoMilliseconds(wake - now) +
                                   std::chrono::milliseconds(1));
      }
    }
  }
  // After a refusal the calls still out finish on their own (a stale adapter
  // refuses them all at once).
  for (std::thread& t : requests) t.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_.groups_per_server.assign(m, 0);
    for (size_t s = 0; s < m; ++s) last_.groups_per_server[s] = state[s].done;
    last_.redispatched = redispatched;
  }
  if (!refused.ok()) return refused;
  std::vector<CompletionGroup> groups;
  groups.reserve(n);
  for (std::optional<CompletionGroup>& g : out) groups.push_back(*std::move(g));
  return groups;
}

}  // namespace microrl::learner
