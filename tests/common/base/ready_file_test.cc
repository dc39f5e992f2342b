#include "common/base/ready_file.h"

#include <unistd.h>

#include <fstream>

#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace microrl {
namespace {

TEST(ReadyFileTest, RoundTrips) {
  const std::string path = testing::MakeTempDir() + "/ready.json";
  ASSERT_TRUE(WriteReadyFile(path, {"learner", 50053, 9403, 1234}).ok());
  const absl::StatusOr<ReadyInfo> info = ReadReadyFile(path);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->component, "learner");
  EXPECT_EQ(info->grpc_port, 50053);
  EXPECT_EQ(info->metrics_port, 9403);
  EXPECT_EQ(info->pid, 1234);
}

TEST(ReadyFileTest, OverwritesAtomicallyAndLeavesNoTemporary) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/ready.json";
  ASSERT_TRUE(WriteReadyFile(path, {"a", 1, 2, 3}).ok());
  ASSERT_TRUE(WriteReadyFile(path, {"b", 4, 5, 6}).ok());
  EXPECT_EQ(ReadReadyFile(path)->component, "b");
  EXPECT_FALSE(std::ifstream(path + ".tmp." + std::to_string(getpid())).good());
}

TEST(ReadyFileTest, MissingAndCorruptFilesAreErrors) {
  const std::string dir = testing::MakeTempDir();
  EXPECT_EQ(ReadReadyFile(dir + "/none.json").status().code(),
            absl::StatusCode::kNotFound);

  std::ofstream(dir + "/bad.json") << "{\"component\": \"x\"";
  EXPECT_EQ(ReadReadyFile(dir + "/bad.json").status().code(),
            absl::StatusCode::kDataLoss);

  std::ofstream(dir + "/wrong.json")
      << R"({"component": "x", "grpc_port": "high"})";
  const absl::Status wrong = ReadReadyFile(dir + "/wrong.json").status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(wrong.message()).find("wrong.json"), std::string::npos);
}

TEST(ReadyFileTest, UnwritableDirectoryIsAnError) {
  const absl::Status status =
      WriteReadyFile("/nonexistent-dir/ready.json", {"a", 1, 2, 3});
  EXPECT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("/nonexistent-dir/"),
            std::string::npos);
}

}  // namespace
}  // namespace microrl
