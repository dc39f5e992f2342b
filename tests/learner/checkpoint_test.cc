// Checkpoints survive crashes: a manifest with every file's size and SHA-256
// is written last, and resume skips checkpoints whose files do not match it.
#include "learner/checkpoint.h"

#include <ATen/ATen.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/tiny_model.h"

namespace microrl::learner {
namespace {

using ::microrl::testing::RandomAdapter;
using ::microrl::testing::TinyDecoder;
using ::testing::HasSubstr;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/checkpoint_test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    root_ = pattern;
    decoder_ = TinyDecoder();
    adapter_ = RandomAdapter(decoder_->config());
    optimizer_ = std::make_unique<AdamW>(adapter_->Parameters(), AdamWOptions());
  }
  void TearDown() override { (void)RemoveTree(root_); }

  std::string Save(int64_t step) {
    TrainingState state;
    state.step = step;
    state.seed = 7;
    const std::string dir = CheckpointDir(root_, step);
    const absl::Status status =
        SaveCheckpoint(dir, state, *adapter_, *optimizer_, "base");
    EXPECT_TRUE(status.ok()) << status;
    return dir;
  }

  static void Truncate(const std::string& path, off_t size) {
    ASSERT_EQ(truncate(path.c_str(), size), 0) << path;
  }
  static off_t Size(const std::string& path) {
    struct stat info;
    return stat(path.c_str(), &info) == 0 ? info.st_size : -1;
  }

  std::string root_;
  std::unique_ptr<model::Decoder> decoder_;
  std::unique_ptr<model::LoraAdapter> adapter_;
  std::unique_ptr<AdamW> optimizer_;
};

TEST_F(CheckpointTest, TheManifestListsEveryFileWithItsSizeAndHash) {
  const std::string dir = Save(2);
  EXPECT_TRUE(VerifyCheckpoint(dir).ok());
  absl::StatusOr<std::string> text = ReadFileToString(dir + "/MANIFEST.json");
  ASSERT_TRUE(text.ok());
  const nlohmann::json manifest = nlohmann::json::parse(*text);
  std::vector<std::string> paths;
  for (const nlohmann::json& file : manifest.at("files")) {
    paths.push_back(file.at("path"));
    EXPECT_EQ(file.at("bytes").get<int64_t>(),
              Size(dir + "/" + file.at("path").get<std::string>()));
    EXPECT_EQ(file.at("sha256").get<std::string>().size(), 64u);
  }
  EXPECT_THAT(paths, ::testing::UnorderedElementsAre(
                         "adapter/adapter_config.json",
                         "adapter/adapter_model.safetensors",
                         "optimizer.safetensors", "state.json"));
  EXPECT_EQ(LatestCheckpoint(root_), dir);
}

// What a power cut leaves of files that were renamed into place but never
// reached the disk: empty or truncated files. Resume takes the newest
// checkpoint that still verifies, and says why it skipped the others.
TEST_F(CheckpointTest, ATornCheckpointIsSkippedForTheNewestValidOne) {
  const std::string older = Save(2);
  const std::string newer = Save(4);
  Truncate(newer + "/optimizer.safetensors",
           Size(newer + "/optimizer.safetensors") / 2);
  EXPECT_THAT(std::string(VerifyCheckpoint(newer).message()),
              HasSubstr("optimizer.safetensors"));
  std::vector<std::string> skipped;
  EXPECT_EQ(LatestCheckpoint(root_, &skipped), older);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr("step_00000004"));

  Truncate(older + "/state.json", 0);  // an empty file
  skipped.clear();
  EXPECT_EQ(LatestCheckpoint(root_, &skipped), std::nullopt);
  EXPECT_EQ(skipped.size(), 2u);
  EXPECT_TRUE(HasCheckpointDirectories(root_));
}

TEST_F(CheckpointTest, AChangedByteOrAMissingManifestFailsVerification) {
  const std::string dir = Save(6);
  {
    std::fstream file(dir + "/adapter/adapter_model.safetensors",
                      std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(-1, std::ios::end);
    file.put('\x5a');
  }
  EXPECT_THAT(std::string(VerifyCheckpoint(dir).message()),
              HasSubstr("SHA-256"));
  const std::string other = Save(8);
  ASSERT_EQ(unlink((other + "/MANIFEST.json").c_str()), 0);
  EXPECT_THAT(std::string(VerifyCheckpoint(other).message()),
              HasSubstr("no MANIFEST.json"));
  EXPECT_EQ(LatestCheckpoint(root_), std::nullopt);
}

TEST_F(CheckpointTest, PruningKeepsTheNewest) {
  Save(2);
  Save(4);
  const std::string newest = Save(6);
  PruneCheckpoints(root_, 1);
  EXPECT_EQ(LatestCheckpoint(root_), newest);
  std::vector<std::string> skipped;
  LatestCheckpoint(root_, &skipped);
  EXPECT_TRUE(skipped.empty());
}

}  // namespace
}  // namespace microrl::learner
