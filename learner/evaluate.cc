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
                                    CompletionSource& rollout,
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
    GenerateParams params;
    params.request_id = absl::StrCat("eval-", dataset, "-", start);
    params.group_size = options.samples;
    params.min_adapter_version = options.min_adapter_version;
    params.disable_adapter = options.disable_adapter;
    params.temperature = options.temperature;
    params.top_p = options.top_p;
    params.max_tokens = options.max_tokens;
    params.seed = options.seed + start;
    std::vector<PromptIds> batch;
    for (size_t i = start; i < end; ++i) {
      absl::StatusOr<std::vector<int32_t>> ids = prompts.Ids(problems[i]);
      if (!ids.ok()) return ids.status();
      batch.push_back({problems[i].id, *std::move(ids)});
    }
    absl::StatusOr<std::vector<CompletionGroup>> groups =
        rollout.Generate(batch, params);
    if (!groups.ok()) return groups.status();
    std::vector<RewardItem> items;
    for (size_t p = 0; p < groups->size(); ++p) {
      const Problem& problem = problems[start + p];
      const std::vector<Completion>& completions = (*groups)[p].completions;
      for (size_t g = 0; g < completions.size(); ++g) {
        const Completion& completion = completions[g];
        RewardItem item;
        item.id = absl::StrCat(problem.id, "#", g);
        item.completion = completion.text;
        item.ground_truth = problem.answer;
        items.push_back(std::move(item));
        length_sum += completion.completion_tokens;
        double nll = 0;
        for (float logprob : completion.logprobs) nll -= logprob;
        entropy_sum +=
            !completion.logprobs.empty() ? nll / completion.logprobs.size() : 0;
        result.adapter_version =
            std::max(result.adapter_version, completion.adapter_version);
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
  // Correct completions per problem (of `samples`): pass@k's standard error
  // and any other estimate can be computed from them.
  json["correct"] = r.correct;
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
