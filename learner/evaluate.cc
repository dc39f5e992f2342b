#include "learner/evaluate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace microrl::learner {

double PassAtK(int64_t n, int64_t c, int64_t k) {
  if (n - c < k) return 1.0;
  // 1 - prod_{i = n-c+1}^{n} (1 - k / i), numerically stable.
  double fail = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i)
    fail *= 1.0 - static_cast<double>(k) / i;
  return 1.0 - fail;
}

absl::StatusOr<EvalResult> Evaluate(const std::string& dataset,
                                    const std::vector<Problem>& problems,
                                    const PromptBuilder& prompts,
                                    RolloutClient& rollout,
                                    const RewardClient& reward,
                                    const EvalOptions& options) {
  EvalResult result;
  result.dataset = dataset;
  result.problems = static_cast<int64_t>(problems.size());
  result.samples = options.samples;
  result.correct.assign(problems.size(), 0);
  double reward_sum = 0;
  double length_sum = 0;
  double entropy_sum = 0;
  int64_t completions = 0;
  int64_t correct = 0;
  for (size_t start = 0; start < problems.size();
       start += static_cast<size_t>(options.prompts_per_call)) {
    const size_t end = std::min(
        problems.size(), start + static_cast<size_t>(options.prompts_per_call));
    v1::GenerateRequest request;
    request.set_group_size(static_cast<int32_t>(options.samples));
    request.set_min_adapter_version(options.min_adapter_version);
    request.set_disable_adapter(options.disable_adapter);
    request.set_request_id(absl::StrCat("eval-", dataset, "-", start));
    v1::SamplingParams* sampling = request.mutable_sampling();
    sampling->set_temperature(static_cast<float>(options.temperature));
    sampling->set_top_p(static_cast<float>(options.top_p));
    sampling->set_max_tokens(static_cast<int32_t>(options.max_tokens));
    sampling->set_seed(options.seed + start);
    for (size_t i = start; i < end; ++i) {
      absl::StatusOr<std::vector<int32_t>> ids = prompts.Ids(problems[i]);
      if (!ids.ok()) return ids.status();
      v1::Prompt* prompt = request.add_prompts();
      prompt->set_id(problems[i].id);
      prompt->mutable_token_ids()->mutable_ids()->Add(ids->begin(), ids->end());
    }
    absl::StatusOr<v1::GenerateResponse> response = rollout.Generate(request);
    if (!response.ok()) return response.status();
    std::vector<RewardItem> items;
    for (int p = 0; p < response->groups_size(); ++p) {
      const Problem& problem = problems[start + p];
      for (int g = 0; g < response->groups(p).completions_size(); ++g) {
        const v1::Completion& completion = response->groups(p).completions(g);
        RewardItem item;
        item.id = absl::StrCat(problem.id, "#", g);
        item.completion = completion.text();
        item.ground_truth = problem.answer;
        items.push_back(std::move(item));
        length_sum += completion.completion_tokens();
        double nll = 0;
        for (float logprob : completion.logprobs()) nll -= logprob;
        entropy_sum += completion.logprobs_size() > 0
                           ? nll / completion.logprobs_size()
                           : 0;
        result.adapter_version =
            std::max(result.adapter_version, completion.adapter_version());
      }
    }
    absl::StatusOr<std::vector<RewardResult>> scores = reward.Score(items);
    if (!scores.ok()) return scores.status();
    for (size_t k = 0; k < scores->size(); ++k) {
      const size_t p = start + k / static_cast<size_t>(options.samples);
      reward_sum += (*scores)[k].reward;
      if ((*scores)[k].correct) {
        ++result.correct[p];
        ++correct;
      }
      ++completions;
    }
  }
  for (int64_t k : options.ks) {
    if (k > options.samples) continue;
    double sum = 0;
    for (int64_t c : result.correct) sum += PassAtK(options.samples, c, k);
    result.pass_at[k] =
        problems.empty() ? 0 : sum / static_cast<double>(problems.size());
  }
  const double n = static_cast<double>(std::max<int64_t>(1, completions));
  result.accuracy = correct / n;
  result.mean_reward = reward_sum / n;
  result.mean_length = length_sum / n;
  result.mean_entropy = entropy_sum / n;
  return result;
}

nlohmann::ordered_json EvalResultToJson(const EvalResult& r) {
  nlohmann::ordered_json json = {{"dataset", r.dataset},
                                 {"problems", r.problems},
                                 {"samples", r.samples},
                                 {"adapter_version", r.adapter_version}};
  for (const auto& [k, value] : r.pass_at)
    json[absl::StrCat("pass@", k)] = value;
  json["accuracy"] = r.accuracy;
  json["mean_reward"] = r.mean_reward;
  json["mean_length"] = r.mean_length;
  json["mean_entropy"] = r.mean_entropy;
  return json;
}

std::string PassAtKTable(const std::vector<EvalResult>& results,
                         const std::vector<int64_t>& ks) {
  std::string out = "| dataset | problems | n |";
  std::string rule = "| --- | --- | --- |";
  for (int64_t k : ks) {
    absl::StrAppend(&out, " pass@", k, " |");
    absl::StrAppend(&rule, " --- |");
  }
  absl::StrAppend(&out, "\n", rule, "\n");
  for (const EvalResult& r : results) {
    absl::StrAppend(&out, "| ", r.dataset, " | ", r.problems, " | ", r.samples,
                    " |");
    for (int64_t k : ks) {
      auto it = r.pass_at.find(k);
      absl::StrAppend(&out, " ",
                      it == r.pass_at.end()
                          ? "-"
                          : absl::StrFormat("%.1f", 100 * it->second),
                      " |");
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace microrl::learner
