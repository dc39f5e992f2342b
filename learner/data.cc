#include "learner/data.h"

#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/base/lines.h"
#include "common/base/random.h"
#include "nlohmann/json.hpp"

namespace microrl::learner {
absl::StatusOr<std::vector<Problem>> LoadProblems(
    const std::string& path, const std::string& problem_field,
    const std::string& answer_field) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<Problem> problems;
  const absl::Status read = ForEachNonBlankLine(in, [&](int64_t line,
                                                        const std::string& text)
                                                        -> absl::Status {
    const std::string where = absl::StrCat(path, ":", line);
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": not JSON: ", e.what()));
    }
    if (!record.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": not a JSON object"));
    }
    Problem problem;
    problem.line = line;
    auto field = [&](const std::string& name,
                     std::string& out) -> absl::Status {
      auto it = record.find(name);
      if (it == record.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": no \"", name, "\" field"));
      }
      if (it->is_string()) {
        out = it->get<std::string>();
      } else if (it->is_number()) {
        out = it->dump();
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": \"", name, "\" must be a string or a number"));
      }
      if (out.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": \"", name, "\" is empty"));
      }
      return absl::OkStatus();
    };
    if (absl::Status status = field(problem_field, problem.problem);
        !status.ok())
      return status;
    if (absl::Status status = field(answer_field, problem.answer); !status.ok())
      return status;
    auto id = record.find("id");
    problem.id =
        id != record.end() && id->is_string() ? id->get<std::string>() : where;
    problems.push_back(std::move(problem));
    return absl::OkStatus();
  });
  if (!read.ok()) return read;
  if (problems.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": no problems"));
  return problems;
}

absl::StatusOr<PromptBuilder> PromptBuilder::Create(
    const std::string& model_dir, std::string system_prompt,
    std::string instruction) {
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tokenizer =
      tokenizer::Tokenizer::FromFile(model_dir + "/tokenizer.json");
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<tokenizer::ChatTemplate> chat_template =
      tokenizer::ChatTemplate::FromTokenizerConfig(model_dir +
                                                   "/tokenizer_config.json");
  if (!chat_template.ok()) return chat_template.status();
  return PromptBuilder(
      std::shared_ptr<const tokenizer::Tokenizer>(*std::move(tokenizer)),
      std::make_shared<const tokenizer::ChatTemplate>(
          *std::move(chat_template)),
      std::move(system_prompt), std::move(instruction));
}

absl::StatusOr<std::string> PromptBuilder::Text(const Problem& problem) const {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!system_prompt_.empty()) {
    messages.push_back({{"role", "system"}, {"content", system_prompt_}});
  }
  messages.push_back(
      {{"role", "user"},
       {"content",
        absl::StrReplaceAll(instruction_, {{"{problem}", problem.problem}})}});
  return chat_template_->Render(messages, /*add_generation_prompt=*/true);
}

absl::StatusOr<std::vector<int32_t>> PromptBuilder::Ids(
    const Problem& problem) const {
  absl::StatusOr<std::string> text = Text(problem);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<int32_t>> ids =
      tokenizer_->EncodeChecked(*text, /*add_special_tokens=*/false);
  if (!ids.ok()) {
    return absl::Status(ids.status().code(),
                        absl::StrCat("problem ", problem.id, ": ",
                                     ids.status().message()));
  }
  return ids;
}

void EpochSampler::Shuffle() {
  order_.resize(size_);
  for (int64_t i = 0; i < size_; ++i) order_[i] = i;
  // Fisher-Yates with a generator of our own, so the order is the same on
  // every platform and library.
  uint64_t state =
      seed_ ^ (0x51ed27f3a9b1c4e5ULL * static_cast<uint64_t>(epoch_ + 1));
  for (int64_t i = size_ - 1; i > 0; --i) {
    const int64_t j =
        static_cast<int64_t>(SplitMix64Next(state) % static_cast<uint64_t>(i + 1));
    std::swap(order_[i], order_[j]);
  }
}

std::vector<int64_t> EpochSampler::Next(int64_t count) {
  std::vector<int64_t> out;
  out.reserve(count);
  while (static_cast<int64_t>(out.size()) < count) {
    if (offset_ == size_) {
      ++epoch_;
      offset_ = 0;
      Shuffle();
    }
    out.push_back(order_[offset_++]);
  }
  return out;
}

void EpochSampler::Seek(int64_t epoch, int64_t offset) {
  epoch_ = epoch;
  offset_ = std::min(std::max<int64_t>(offset, 0), size_);
  Shuffle();
}

}  // namespace microrl::learner
