#ifndef MICRORL_LEARNER_DATA_H_
#define MICRORL_LEARNER_DATA_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"

namespace microrl::learner {

// One problem of a JSONL dataset.
struct Problem {
  std::string id;  // the record's "id" if it has one, else "<file>:<line>"
  std::string problem;
  std::string answer;  // a string, or a number written as JSON writes it
  int64_t line = 0;    // 1-based line in the file
};

// Reads a JSONL file of objects with `problem_field` and `answer_field`
// (strings; a numeric answer is accepted and kept as written). Blank lines are
// skipped. A malformed line, or one missing a field, is an error naming the
// file and line.
absl::StatusOr<std::vector<Problem>> LoadProblems(
    const std::string& path, const std::string& problem_field,
    const std::string& answer_field);

// Turns a problem into the model's prompt: the chat template of the model's
// tokenizer_config.json over an optional system message and the user message
// `instruction` with "{problem}" replaced, with the generation prompt; then
// token ids (no special tokens added: the template writes them).
class PromptBuilder {
 public:
  // `model_dir` holds tokenizer.json and tokenizer_config.json.
  static absl::StatusOr<PromptBuilder> Create(const std::string& model_dir,
                                              std::string system_prompt,
                                              std::string instruction);

  absl::StatusOr<std::string> Text(const Problem& problem) const;
  absl::StatusOr<std::vector<int32_t>> Ids(const Problem& problem) const;
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  // The chat template's end-of-turn token ("" if it names none).
  const std::string& eos_token() const { return chat_template_->eos_token(); }

 private:
  PromptBuilder(std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
                std::shared_ptr<const tokenizer::ChatTemplate> chat_template,
                std::string system_prompt, std::string instruction)
      : tokenizer_(std::move(tokenizer)),
        chat_template_(std::move(chat_template)),
        system_prompt_(std::move(system_prompt)),
        instruction_(std::move(instruction)) {}

  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  std::shared_ptr<const tokenizer::ChatTemplate> chat_template_;
  std::string system_prompt_;
  std::string instruction_;
};

// Which problems each step trains on: every epoch is a fresh permutation of
// the dataset drawn from (seed, epoch); batches run through it in order and
// continue into the next epoch. The position is two integers, saved in
// checkpoints so a resumed run continues with the same next batch.
class EpochSampler {
 public:
  EpochSampler(int64_t size, uint64_t seed) : size_(size), seed_(seed) {
    Shuffle();
  }

  // The next `count` problem indices.
  std::vector<int64_t> Next(int64_t count);

  int64_t epoch() const { return epoch_; }
  int64_t offset() const { return offset_; }
  // Restores a position saved from epoch() and offset().
  void Seek(int64_t epoch, int64_t offset);

 private:
  void Shuffle();

  int64_t size_;
  uint64_t seed_;
  int64_t epoch_ = 0;
  int64_t offset_ = 0;
  std::vector<int64_t> order_;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_DATA_H_
