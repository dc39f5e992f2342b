#include "reward_service/reward_service.h"

#include <atomic>

#include "absl/strings/str_cat.h"

namespace microrl::reward {
namespace {

constexpr size_t kMaxPromptBytes = 1 << 20;
constexpr size_t kMaxCompletionBytes = 1 << 20;
constexpr size_t kMaxGroundTruthBytes = 64 << 10;

prometheus::Family<prometheus::Counter>& CounterFamily(
    prometheus::Registry& registry, const std::string& name,
    const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

}  // namespace

RewardService::RewardService(const RewardServiceOptions& options,
                             const rpc::ProcessIdentity& identity,
                             prometheus::Registry& registry)
    : options_(options),
      identity_(identity),
      pool_(static_cast<size_t>(std::max(0, options.threads))),
      correct_(
          CounterFamily(registry, "microrl_reward_items_total", "Items scored.")
              .Add({{"correct", "true"}})),
      incorrect_(
          CounterFamily(registry, "microrl_reward_items_total", "Items scored.")
              .Add({{"correct", "false"}})),
      well_formed_(
          CounterFamily(registry, "microrl_reward_format_total",
                        "Items by whether the <think> layout was well formed.")
              .Add({{"well_formed", "true"}})),
      malformed_(
          CounterFamily(registry, "microrl_reward_format_total",
                        "Items by whether the <think> layout was well formed.")
              .Add({{"well_formed", "false"}})),
      timeouts_(
          CounterFamily(registry, "microrl_reward_timeouts_total",
                        "Items whose comparison hit the per-item deadline.")
              .Add({})),
      rejected_(CounterFamily(registry,
                              "microrl_reward_rejected_requests_total",
                              "Score requests refused with INVALID_ARGUMENT.")
                    .Add({})),
      item_seconds_(prometheus::BuildHistogram()
                        .Name("microrl_reward_item_seconds")
                        .Help("Time to score one item, seconds.")
                        .Register(registry)
                        .Add({}, prometheus::Histogram::BucketBoundaries{
                                     1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2,
                                     3e-2, 0.1, 0.3, 1, 3, 10})) {}

grpc::Status RewardService::Score(grpc::ServerContext* context,
                                  const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) {
  auto invalid = [&](const std::string& message) {
    rejected_.Increment();
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
  };
  const int n = request->items_size();
  if (n == 0) return invalid("items: at least one item is required");
  if (n > options_.max_batch_items) {
    return invalid(absl::StrCat("items: ", n, " items exceed the limit of ",
                                options_.max_batch_items));
  }
  if (request->item_deadline_seconds() < 0 ||
      request->item_deadline_seconds() > 600) {
    return invalid("item_deadline_seconds: must be in [0, 600]");
  }
  for (int i = 0; i < n; ++i) {
    const v1::ScoreItem& item = request->items(i);
    if (item.prompt().size() > kMaxPromptBytes) {
      return invalid(absl::StrCat("items[", i, "].prompt: longer than 1 MiB"));
    }
    if (item.completion().size() > kMaxCompletionBytes) {
      return invalid(
          absl::StrCat("items[", i, "].completion: longer than 1 MiB"));
    }
    if (item.ground_truth().size() > kMaxGroundTruthBytes) {
      return invalid(
          absl::StrCat("items[", i, "].ground_truth: longer than 64 KiB"));
    }
  }
  ScoreOptions scoring = options_.scoring;
  if (request->item_deadline_seconds() > 0) {
    scoring.item_deadline = absl::Seconds(request->item_deadline_seconds());
  }
  std::vector<ScoreOutput> outputs(n);
  std::vector<bool> well_formed(n);
  // A cancelled call (the client gave up, or its deadline passed) stops
  // taking the pool's time: the items not begun yet are skipped.
  std::atomic<bool> cancelled{false};
  pool_.ParallelFor(static_cast<size_t>(n), [&](size_t i) {
    if (cancelled.load(std::memory_order_relaxed) ||
        (i % 16 == 0 && context->IsCancelled())) {
      cancelled = true;
      return;
    }
    const v1::ScoreItem& item = request->items(static_cast<int>(i));
    outputs[i] = ScoreCompletion(
        {item.id(), item.prompt(), item.completion(), item.ground_truth()},
        scoring);
  });
  if (cancelled || context->IsCancelled()) {
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        "the call was cancelled or passed its deadline");
  }
  for (int i = 0; i < n; ++i) {
    const ScoreOutput& out = outputs[i];
    v1::ScoreResult* result = response->add_results();
    result->set_id(out.id);
    result->set_reward(out.reward);
    for (const auto& [name, value] : out.components)
      (*result->mutable_components())[name] = value;
    result->set_correct(out.correct);
    result->set_extracted_answer(out.extracted_answer);
    result->set_reason(out.reason);
    result->set_seconds(out.seconds);
    (out.correct ? correct_ : incorrect_).Increment();
    (out.components.at("format") > 0 ? well_formed_ : malformed_).Increment();
    if (out.timed_out) timeouts_.Increment();
    item_seconds_.Observe(out.seconds);
  }
  return grpc::Status::OK;
}

grpc::Status RewardService::GetInfo(grpc::ServerContext* context,
                                    const v1::GetInfoRequest* request,
                                    v1::RewardInfo* response) {
  identity_.Fill(response->mutable_process());
  response->set_name("math_format_v2");
  (*response->mutable_component_weights())["format"] =
      options_.scoring.format_weight;
  (*response->mutable_component_weights())["correct"] =
      options_.scoring.correct_weight;
  response->set_item_deadline_seconds(
      absl::ToDoubleSeconds(options_.scoring.item_deadline));
  response->set_max_batch_items(options_.max_batch_items);
  return grpc::Status::OK;
}

}  // namespace microrl::reward
