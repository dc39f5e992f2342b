#include "learner/samples.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"

namespace microrl::learner {
namespace {

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double sum = 0;
  for (double x : v) sum += x;
  return sum / static_cast<double>(v.size());
}

double Std(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double mean = Mean(v);
  double sum = 0;
  for (double x : v) sum += (x - mean) * (x - mean);
  return std::sqrt(sum / static_cast<double>(v.size() - 1));
}

}  // namespace

std::vector<Sample> BuildSamples(const std::vector<CompletionGroup>& groups,
                                 const std::vector<RewardResult>& scores,
                                 const SampleOptions& options, StepMetrics& m) {
  return BuildSampleShare(groups, scores, options, 0,
                          static_cast<int64_t>(groups.size()), m)
      .samples;
}

SampleShare BuildSampleShare(const std::vector<CompletionGroup>& groups,
                             const std::vector<RewardResult>& scores,
                             const SampleOptions& options, int64_t first_group,
                             int64_t end_group, StepMetrics& m) {
  std::vector<float> rewards;
  std::vector<double> reward_values, lengths;
  std::map<std::string, std::vector<double>> components;
  int64_t correct = 0;
  int64_t truncated = 0;
  int64_t max_length = 0;
  for (const RewardResult& r : scores) {
    rewards.push_back(static_cast<float>(r.reward));
    reward_values.push_back(r.reward);
    correct += r.correct ? 1 : 0;
    for (const auto& [name, value] : r.components)
      components[name].push_back(value);
  }
  for (const CompletionGroup& g : groups) {
    for (const Completion& c : g.completions) {
      lengths.push_back(static_cast<double>(c.completion_tokens));
      max_length = std::max<int64_t>(max_length, c.completion_tokens);
      truncated += c.truncated ? 1 : 0;
    }
  }
  const at::Tensor reward_tensor = at::tensor(rewards, at::kFloat);
  const at::Tensor advantages =
      ComputeAdvantages(reward_tensor, options.group_size, options.advantage)
          .contiguous();
  const at::Tensor zero_variance =
      ZeroVarianceGroups(reward_tensor, options.group_size).contiguous();
  const float* adv = advantages.data_ptr<float>();
  const bool* flat = zero_variance.data_ptr<bool>();

  SampleShare share;
  std::vector<Sample>& samples = share.samples;
  int64_t index = 0;
  int64_t zero_groups = 0;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const CompletionGroup& g = groups[gi];
    const int64_t group = static_cast<int64_t>(gi);
    const bool local = group >= first_group && group < end_group;
    zero_groups += flat[index] ? 1 : 0;
    for (const Completion& c : g.completions) {
      // Empty completions are never trained on (another rank's are known by
      // their length).
      const bool empty = local ? c.token_ids.empty() : c.completion_tokens == 0;
      const bool skip = (options.filter_zero_variance && flat[index]) || empty;
      if (!skip) {
        if (local) {
          Sample s;
          s.prompt = g.prompt_token_ids;
          s.completion = c.token_ids;
          s.rollout_logprobs = c.logprobs;
          s.advantage = adv[index];
          samples.push_back(std::move(s));
        } else if (group < first_group) {
          ++share.first_sample;
        }
        ++share.global_samples;
      }
      ++index;
    }
  }
  const double completions =
      static_cast<double>(std::max<size_t>(1, reward_values.size()));
  m["reward_mean"] = Mean(reward_values);
  m["reward_std"] = Std(reward_values);
  for (const auto& [name, values] : components)
    m["reward/" + name] = Mean(values);
  m["accuracy"] = correct / completions;
  m["zero_variance_fraction"] =
      static_cast<double>(zero_groups) /
      std::max<int>(1, static_cast<int>(groups.size()));
  m["response_length_mean"] = Mean(lengths);
  m["response_length_max"] = max_length;
  m["clipped_ratio"] = truncated / completions;
  m["trained_completions"] = share.global_samples;
  return share;
}

std::vector<RewardItem> RewardItemsFor(
    const std::vector<std::string>& problem_ids,
    const std::vector<std::string>& prompt_texts,
    const std::vector<std::string>& answers,
    const std::vector<CompletionGroup>& groups) {
  std::vector<RewardItem> items;
  for (size_t p = 0; p < groups.size(); ++p) {
    for (size_t g = 0; g < groups[p].completions.size(); ++g) {
      RewardItem item;
      item.id = absl::StrCat(problem_ids[p], "#", g);
      item.prompt = prompt_texts[p];
      item.completion = groups[p].completions[g].text;
      item.ground_truth = answers[p];
      items.push_back(std::move(item));
    }
  }
  return items;
}

int64_t CountOffPolicy(const std::vector<CompletionGroup>& groups,
                       uint64_t version, uint64_t* seen) {
  int64_t other = 0;
  for (const CompletionGroup& group : groups) {
    for (const Completion& c : group.completions) {
      if (c.adapter_version != version) {
        ++other;
        *seen = c.adapter_version;
      }
    }
  }
  return other;
}

int64_t CompletionTokens(const std::vector<CompletionGroup>& groups) {
  int64_t tokens = 0;
  for (const CompletionGroup& g : groups) {
    for (const Completion& c : g.completions) tokens += c.completion_tokens;
  }
  return tokens;
}

void AddDispatchMetrics(const std::vector<int64_t>& groups_per_server,
                        int64_t redispatched, StepMetrics& m) {
  m["rollout_groups_per_server"] = groups_per_server;
  m["rollout_redispatched"] = redispatched;
}

void AddUpdateMetrics(const UpdateStats& stats, bool off_policy,
                      StepMetrics& m) {
  m["entropy"] = stats.entropy;
  m["kl"] = stats.kl;
  m["policy_loss"] = stats.policy_loss;
  m["loss"] = stats.loss;
  m["clip_fraction_low"] = stats.clip_low_fraction;
  m["clip_fraction_high"] = stats.clip_high_fraction;
  m["dual_clip_fraction"] = stats.dual_clip_fraction;
  m["approx_kl"] = stats.approx_kl;
  m["grad_norm"] = stats.grad_norm;
  m["lr"] = stats.lr;
  m["logprob_mismatch_mean"] = stats.logprob_mismatch_mean;
  m["logprob_mismatch_max"] = stats.logprob_mismatch_max;
  m["optimizer_steps"] = stats.optimizer_steps;
  m["skipped_optimizer_steps"] = stats.skipped_steps;
  if (off_policy) {
    m["is_weight_mean"] = stats.is_weight_mean;
    m["is_truncated_fraction"] = stats.is_truncated_fraction;
    m["is_masked_fraction"] = stats.is_masked_fraction;
  }
}

}  // namespace microrl::learner
