#include "reward_service/score_command.h"

#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/lines.h"
#include "common/base/thread_pool.h"
#include "nlohmann/json.hpp"

namespace microrl::reward {

absl::Status RunScoreCommand(const ScoreCommandOptions& options) {
  if (options.mode != "completion" && options.mode != "answer") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--mode=", options.mode, ": must be completion or answer"));
  }
  if (options.in_path.empty() || options.out_path.empty()) {
    return absl::InvalidArgumentError("--in and --out are required");
  }
  std::ifstream in(options.in_path);
  if (!in)
    return absl::NotFoundError(absl::StrCat("cannot read ", options.in_path));
  std::vector<ScoreInput> inputs;
  const absl::Status read = ForEachNonBlankLine(in, [&](int64_t line,
                                                        const std::string& text)
                                                        -> absl::Status {
    auto error = [&](const std::string& why) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.in_path, ":", line, ": ", why));
    };
    const nlohmann::json record = nlohmann::json::parse(text, nullptr, false);
    if (!record.is_object()) return error("not a JSON object");
    ScoreInput input;
    const char* answer_key =
        options.mode == "answer" && record.contains("answer") ? "answer"
                                                              : "completion";
    for (const auto& [key, field, required] :
         {std::tuple{answer_key, &input.completion, true},
          std::tuple{"ground_truth", &input.ground_truth, true},
          std::tuple{"prompt", &input.prompt, false}}) {
      if (!record.contains(key)) {
        if (required) return error(absl::StrCat("missing \"", key, "\""));
        continue;
      }
      if (!record[key].is_string())
        return error(absl::StrCat("\"", key, "\" is not a string"));
      *field = record[key].get<std::string>();
    }
    if (record.contains("id")) {
      input.id = record["id"].is_string() ? record["id"].get<std::string>()
                                          : record["id"].dump();
    }
    inputs.push_back(std::move(input));
    return absl::OkStatus();
  });
  if (!read.ok()) return read;
  std::vector<ScoreOutput> outputs(inputs.size());
  ThreadPool pool(static_cast<size_t>(std::max(0, options.threads)));
  pool.ParallelFor(inputs.size(), [&](size_t i) {
    outputs[i] = options.mode == "answer"
                     ? ScoreAnswer(inputs[i], options.scoring)
                     : ScoreCompletion(inputs[i], options.scoring);
  });
  std::string out;
  for (const ScoreOutput& output : outputs) {
    nlohmann::json record = {{"id", output.id},
                             {"reward", output.reward},
                             {"components", output.components},
                             {"extracted_answer", output.extracted_answer},
                             {"answer_source", output.answer_source},
                             {"correct", output.correct},
                             {"reason", output.reason}};
    out += record.dump() + "\n";
  }
  return WriteFileAtomically(options.out_path, out);
}

}  // namespace microrl::reward
