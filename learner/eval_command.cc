#include "learner/eval_command.h"

#include <iostream>
#include <memory>

#include "common/base/file.h"
#include "learner/reward_client.h"
#include "learner/rollout_client.h"

namespace microrl::learner {

absl::Status RunEvalCommand(const EvalCommandOptions& o) {
  BenchmarkOptions benchmarks = o.benchmarks;
  if (benchmarks.datasets.empty())
    return absl::InvalidArgumentError("--datasets: name at least one");
  if (benchmarks.samples < 1)
    return absl::InvalidArgumentError("--samples: must be >= 1");
  if (!o.openai.base_url.empty()) {
    if (!o.adapter_dir.empty()) {
      return absl::InvalidArgumentError(
          "--adapter cannot be loaded over --openai_base_url: serve it there "
          "(e.g. rollout_server --adapter) and name it with --openai_model");
    }
    absl::StatusOr<std::unique_ptr<OpenAiClient>> client =
        OpenAiClient::Create(o.openai);
    if (!client.ok()) return client.status();
    absl::StatusOr<std::unique_ptr<RewardClient>> reward = RewardClient::Create(
        o.reward_address, absl::Minutes(5), {}, o.reward_security);
    if (!reward.ok()) return reward.status();
    std::cout << "evaluating " << (*client)->model() << " at "
              << o.openai.base_url << "\n";
    benchmarks.model_label = (*client)->model();
    return RunBenchmarks(benchmarks, **client, **reward);
  }
  RolloutClientOptions options;
  options.security = o.rollout_security;
  absl::StatusOr<std::unique_ptr<RolloutClient>> rollout =
      RolloutClient::Create(o.rollout_address, options);
  if (!rollout.ok()) return rollout.status();
  // A server left asleep by a colocated run is woken.
  if (absl::Status woke = (*rollout)->WakeIfAsleep(); !woke.ok()) return woke;
  absl::StatusOr<std::unique_ptr<RewardClient>> reward = RewardClient::Create(
      o.reward_address, absl::Minutes(5), {}, o.reward_security);
  if (!reward.ok()) return reward.status();

  if (!o.adapter_dir.empty()) {
    absl::StatusOr<std::string> config =
        ReadFileToString(o.adapter_dir + "/adapter_config.json");
    if (!config.ok()) return config.status();
    absl::StatusOr<std::string> weights =
        ReadFileToString(o.adapter_dir + "/adapter_model.safetensors");
    if (!weights.ok()) return weights.status();
    absl::StatusOr<v1::RolloutInfo> info = (*rollout)->GetInfo();
    if (!info.ok()) return info.status();
    const uint64_t version = info->adapter_version() + 1;
    absl::StatusOr<v1::LoadAdapterResponse> loaded =
        (*rollout)->LoadAdapter(version, *config, *weights);
    if (!loaded.ok()) return loaded.status();
    std::cout << "loaded " << o.adapter_dir << " as adapter version " << version
              << "\n";
    benchmarks.min_adapter_version = version;
    benchmarks.model_label = o.adapter_dir;
  }
  return RunBenchmarks(benchmarks, **rollout, **reward);
}

}  // namespace microrl::learner
