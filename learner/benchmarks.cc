#include "learner/benchmarks.h"

#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/file.h"
#include "learner/data.h"
#include "learner/evaluate.h"

namespace microrl::learner {

absl::Status RunBenchmarks(const BenchmarkOptions& o, CompletionSource& rollout,
                           const RewardClient& reward,
                           const std::atomic<bool>* stop) {
  if (o.datasets.empty())
    return absl::InvalidArgumentError("--datasets: name at least one");
  if (o.samples < 1)
    return absl::InvalidArgumentError("--samples: must be >= 1");
  absl::StatusOr<PromptBuilder> prompts =
      PromptBuilder::Create(o.model_dir, o.system_prompt, o.instruction);
  if (!prompts.ok()) return prompts.status();
  std::vector<int64_t> ks;
  for (int64_t k : o.ks) {
    if (k <= o.samples) ks.push_back(k);
  }
  std::vector<EvalResult> adapted;
  std::vector<EvalResult> base;
  nlohmann::ordered_json json = nlohmann::ordered_json::array();
  for (const std::string& spec : o.datasets) {
    if (stop != nullptr && stop->load())
      return absl::CancelledError("stopping");
    const size_t eq = spec.find('=');
    const std::string name =
        eq == std::string::npos ? spec : spec.substr(0, eq);
    const std::string path = eq == std::string::npos
                                 ? o.data_dir + "/" + spec + ".jsonl"
                                 : spec.substr(eq + 1);
    absl::StatusOr<std::vector<Problem>> problems =
        LoadProblems(path, o.problem_field, o.answer_field);
    if (!problems.ok()) return problems.status();
    if (o.problems > 0 && static_cast<int64_t>(problems->size()) > o.problems) {
      problems->resize(o.problems);
    }
    EvalOptions options;
    options.samples = o.samples;
    options.temperature = o.temperature;
    options.top_p = o.top_p;
    options.max_tokens = o.max_tokens;
    options.seed = o.seed;
    options.ks = ks;
    options.min_adapter_version = o.min_adapter_version;
    absl::StatusOr<EvalResult> result =
        Evaluate(name, *problems, *prompts, rollout, reward, options);
    if (!result.ok()) return result.status();
    nlohmann::ordered_json line = EvalResultToJson(*result);
    line["model"] = o.model_label;
    json.push_back(line);
    adapted.push_back(*std::move(result));
    if (o.compare_base) {
      options.disable_adapter = true;
      absl::StatusOr<EvalResult> base_result =
          Evaluate(name, *problems, *prompts, rollout, reward, options);
      if (!base_result.ok()) return base_result.status();
      nlohmann::ordered_json base_line = EvalResultToJson(*base_result);
      base_line["model"] = "base";
      json.push_back(base_line);
      base.push_back(*std::move(base_result));
    }
  }
  std::string markdown = "## pass@k (%)\n\n" + PassAtKTable(adapted, ks);
  if (o.compare_base) {
    absl::StrAppend(
        &markdown, "\n## base model pass@k (%)\n\n", PassAtKTable(base, ks),
        "\n## relative change of mean token entropy vs the base model\n\n"
        "| dataset | base | adapter | change |\n| --- | --- | --- | --- |\n");
    for (size_t i = 0; i < adapted.size(); ++i) {
      const double h0 = base[i].mean_entropy;
      const double h1 = adapted[i].mean_entropy;
      absl::StrAppend(&markdown,
                      absl::StrFormat("| %s | %.4f | %.4f | %+.1f%% |\n",
                                      adapted[i].dataset, h0, h1,
                                      h0 > 0 ? 100 * (h1 - h0) / h0 : 0.0));
    }
  }
  std::cout << markdown;
  if (!o.out_dir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(o.out_dir, error);
    if (absl::Status s =
            WriteFileAtomically(o.out_dir + "/eval.json", json.dump(1) + "\n");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = WriteFileAtomically(o.out_dir + "/eval.md", markdown);
        !s.ok())
      return s;
  }
  return absl::OkStatus();
}

}  // namespace microrl::learner
