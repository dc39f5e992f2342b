#include "learner/reward_client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/base/net.h"
#include "common/rpc/client.h"
#include "common/rpc/retry.h"
#include "common/rpc/status.h"
#include "grpcpp/client_context.h"

namespace microrl::learner {

absl::StatusOr<std::unique_ptr<RewardClient>> RewardClient::Create(
    const std::string& address, absl::Duration timeout,
    const rpc::RetryPolicy& retry, const rpc::ClientSecurity& security) {
  if (absl::StatusOr<HostPort> parsed = ParseHostPort(address); !parsed.ok()) {
    return parsed.status();
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      rpc::MakeSecureChannel(address, security);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<RewardClient>(new RewardClient(
      v1::Reward::NewStub(*std::move(channel)), timeout, retry));
}

absl::StatusOr<std::vector<RewardResult>> RewardClient::Score(
    const std::vector<RewardItem>& items, size_t batch_size) const {
  std::vector<RewardResult> results;
  results.reserve(items.size());
  for (size_t start = 0; start < items.size(); start += batch_size) {
    const size_t end = std::min(items.size(), start + batch_size);
    v1::ScoreRequest request;
    for (size_t i = start; i < end; ++i) {
      v1::ScoreItem* item = request.add_items();
      item->set_id(items[i].id);
      item->set_prompt(items[i].prompt);
      item->set_completion(items[i].completion);
      item->set_ground_truth(items[i].ground_truth);
      for (const auto& [key, value] : items[i].metadata)
        (*item->mutable_metadata())[key] = value;
    }
    v1::ScoreResponse response;
    const absl::Status status = rpc::RetryUnavailable(
        "reward Score", retry_,
        [&]() -> absl::Status {
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() +
                               absl::ToChronoMilliseconds(timeout_));
          {
            std::lock_guard<std::mutex> lock(mu_);
            if (cancelled_)
              return absl::CancelledError("the learner is stopping");
            in_flight_.insert(&context);
          }
          response.Clear();
          const grpc::Status result =
              stub_->Score(&context, request, &response);
          {
            std::lock_guard<std::mutex> lock(mu_);
            in_flight_.erase(&context);
          }
          return rpc::FromGrpcStatus(result);
        },
        [this] {
          std::lock_guard<std::mutex> lock(mu_);
          return cancelled_;
        });
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("reward service: ", status.message()));
    }
    if (response.results_size() != static_cast<int>(end - start)) {
      return absl::DataLossError(
          absl::StrCat("reward service returned ", response.results_size(),
                       " results for ", end - start, " items"));
    }
    for (int k = 0; k < response.results_size(); ++k) {
      const v1::ScoreResult& r = response.results(k);
      if (r.id() != items[start + k].id) {
        return absl::DataLossError(absl::StrCat(
            "reward service answered item \"", r.id(), "\" where \"",
            items[start + k].id, "\" was expected"));
      }
      RewardResult result;
      result.id = r.id();
      result.reward = r.reward();
      result.components.insert(r.components().begin(), r.components().end());
      result.correct = r.correct();
      result.extracted_answer = r.extracted_answer();
      result.reason = r.reason();
      results.push_back(std::move(result));
    }
  }
  return results;
}

absl::StatusOr<v1::RewardInfo> RewardClient::GetInfo() const {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(timeout_));
  v1::RewardInfo info;
  const grpc::Status status =
      stub_->GetInfo(&context, v1::GetInfoRequest(), &info);
  if (!status.ok()) return rpc::FromGrpcStatus(status);
  return info;
}

void RewardClient::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  for (grpc::ClientContext* context : in_flight_) context->TryCancel();
}

}  // namespace microrl::learner
