#include "common/base/file.h"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace microrl {
namespace {

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* entry = readdir(d)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  return names;
}

// Runs `write` with the file size limit at 4 KiB and SIGXFSZ ignored (writes
// past it fail with EFBIG, as on a full disk), then restores both.
void UnderSmallFileSizeLimit(const std::function<absl::Status()>& write,
                             absl::Status* status) {
  struct rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  void (*previous)(int) = signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  *status = write();
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, previous);
}

TEST(FileTest, WriteFileAtomicallyReplacesTheWholeFile) {
  char pattern[] = "/tmp/file_test.XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  ASSERT_TRUE(WriteFileAtomically(dir + "/a", "first").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/a", "second, longer").ok());
  EXPECT_EQ(*ReadFileToString(dir + "/a"), "second, longer");
  EXPECT_EQ(Entries(dir), std::vector<std::string>{"a"});
  EXPECT_TRUE(SyncDirectory(dir).ok());
  EXPECT_FALSE(SyncDirectory(dir + "/missing").ok());
  EXPECT_TRUE(RemoveTree(dir).ok());
}

// A write that fails part-way (here the file size limit, as a full disk
// would) leaves neither the target nor the temporary file behind.
TEST(FileTest, AFailedWriteLeavesNoTemporaryFile) {
  char pattern[] = "/tmp/file_test.XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  absl::Status status;
  ASSERT_NO_FATAL_FAILURE(UnderSmallFileSizeLimit(
      [&] {
        return WriteFileAtomically(dir + "/big", std::string(1 << 16, 'x'));
      },
      &status));
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(Entries(dir).empty()) << Entries(dir).size() << " left";
  // A target in a missing directory: an error naming it, nothing created.
  const absl::Status missing = WriteFileAtomically(dir + "/no/such", "x");
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find(dir + "/no/such"), std::string::npos);
  EXPECT_TRUE(RemoveTree(dir).ok());
}

// An append that fails part-way (the file size limit standing in for a full
// disk) leaves the file as it was: no torn record at its end.
TEST(FileTest, AFailedAppendLeavesTheFileAsItWas) {
  char pattern[] = "/tmp/file_test.XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  const std::string log = dir + "/log.jsonl";
  ASSERT_TRUE(AppendToFile(log, "{\"step\": 1}\n", /*sync=*/true).ok());
  ASSERT_TRUE(AppendToFile(log, "{\"step\": 2}\n").ok());
  EXPECT_TRUE(SyncFile(log).ok());
  absl::Status status;
  ASSERT_NO_FATAL_FAILURE(UnderSmallFileSizeLimit(
      [&] {
        return AppendToFile(log, std::string(1 << 16, 'x') + "\n",
                            /*sync=*/true);
      },
      &status));
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find(log), std::string::npos) << status;
  EXPECT_EQ(*ReadFileToString(log), "{\"step\": 1}\n{\"step\": 2}\n");
  EXPECT_FALSE(SyncFile(dir + "/missing").ok());
  EXPECT_FALSE(AppendToFile(dir + "/no/such", "x").ok());
  EXPECT_TRUE(RemoveTree(dir).ok());
}

}  // namespace
}  // namespace microrl
