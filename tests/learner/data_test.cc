// Datasets, prompts through the model's chat template, and the per-epoch
// order.
#include "learner/data.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace microrl::learner {
namespace {

using ::testing::HasSubstr;

std::string WriteFile(const std::string& text) {
  const std::string path = testing::MakeTempDir() + "/data.jsonl";
  std::ofstream(path) << text;
  return path;
}

TEST(DataTest, LoadsProblemsWithConfigurableFields) {
  const std::string path = WriteFile(
      "{\"id\": \"a\", \"question\": \"1+1?\", \"solution\": \"2\"}\n\n"
      "{\"question\": \"2+2?\", \"solution\": 4}\n");
  absl::StatusOr<std::vector<Problem>> problems =
      LoadProblems(path, "question", "solution");
  ASSERT_TRUE(problems.ok()) << problems.status();
  ASSERT_EQ(problems->size(), 2u);
  EXPECT_EQ((*problems)[0].id, "a");
  EXPECT_EQ((*problems)[1].answer, "4");
  EXPECT_EQ((*problems)[1].line, 3);
  EXPECT_EQ((*problems)[1].id, path + ":3");
}

TEST(DataTest, ErrorsNameFileAndLine) {
  const std::string path = WriteFile(
      "{\"problem\": \"x\", \"answer\": \"1\"}\n{\"problem\": \"y\"}\n");
  EXPECT_THAT(LoadProblems(path, "problem", "answer").status().message(),
              HasSubstr(path + ":2: no \"answer\" field"));
  const std::string broken =
      WriteFile("{\"problem\": \"x\", \"answer\": \"1\"}\n{oops\n");
  EXPECT_THAT(LoadProblems(broken, "problem", "answer").status().message(),
              HasSubstr(broken + ":2: not JSON"));
  EXPECT_THAT(
      LoadProblems("/no/such.jsonl", "problem", "answer").status().message(),
      HasSubstr("/no/such.jsonl"));
}

TEST(DataTest, ReadsTheSharedTrainingSet) {
  absl::StatusOr<std::vector<Problem>> problems =
      LoadProblems(std::string(MICRORL_SHARED_DIR) + "/data/math_train.jsonl",
                   "problem", "answer");
  ASSERT_TRUE(problems.ok()) << problems.status();
  EXPECT_EQ(problems->size(), 7470u);
}

TEST(DataTest, PromptsGoThroughTheModelsChatTemplate) {
  const std::string dir = testing::MakeTempDir();
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(
        std::string(MICRORL_SHARED_DIR) + "/tokenizers/qwen3/" + name,
        dir + "/" + name);
  }
  absl::StatusOr<PromptBuilder> builder =
      PromptBuilder::Create(dir, "Be brief.", "Q: {problem}\nBox it.");
  ASSERT_TRUE(builder.ok()) << builder.status();
  Problem problem;
  problem.problem = "What is $1+1$?";
  absl::StatusOr<std::string> text = builder->Text(problem);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ: "
            "What is $1+1$?\n"
            "Box it.<|im_end|>\n<|im_start|>assistant\n");
  absl::StatusOr<std::vector<int32_t>> ids = builder->Ids(problem);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->front(), builder->tokenizer().TokenToId("<|im_start|>"));
  EXPECT_EQ(builder->tokenizer().Decode(*ids), *text);
}

TEST(DataTest, EachEpochIsAPermutationAndPositionsResume) {
  EpochSampler sampler(10, 7);
  std::set<int64_t> first_epoch;
  std::vector<int64_t> drawn;
  for (int i = 0; i < 5; ++i) {
    for (int64_t index : sampler.Next(3)) drawn.push_back(index);
  }
  for (int i = 0; i < 10; ++i) first_epoch.insert(drawn[i]);
  EXPECT_EQ(first_epoch.size(), 10u);  // every problem once per epoch
  EXPECT_EQ(sampler.epoch(), 1);
  EXPECT_EQ(sampler.offset(), 5);
  EXPECT_NE(std::vector<int64_t>(drawn.begin(), drawn.begin() + 5),
            std::vector<int64_t>(drawn.begin() + 10, drawn.begin() + 15));
  // A sampler moved to a saved position continues identically.
  EpochSampler resumed(10, 7);
  resumed.Seek(1, 5);
  EpochSampler original(10, 7);
  original.Next(15);
  EXPECT_EQ(resumed.Next(8), original.Next(8));
}

}  // namespace
}  // namespace microrl::learner
