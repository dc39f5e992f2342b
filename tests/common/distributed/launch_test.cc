#include "common/distributed/launch.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl::distributed {
namespace {

using ::testing::HasSubstr;

EnvReader Env(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(LaunchTest, NoLauncherIsOneProcess) {
  absl::StatusOr<LaunchEnv> launch = ReadLaunchEnv(Env({}));
  ASSERT_TRUE(launch.ok()) << launch.status();
  EXPECT_EQ(launch->world_size, 1);
  EXPECT_EQ(launch->rank, 0);
  EXPECT_FALSE(launch->distributed());
  EXPECT_EQ(launch->launcher, "");
}

TEST(LaunchTest, Torchrun) {
  absl::StatusOr<LaunchEnv> launch =
      ReadLaunchEnv(Env({{"RANK", "5"},
                         {"LOCAL_RANK", "1"},
                         {"WORLD_SIZE", "8"},
                         {"LOCAL_WORLD_SIZE", "4"},
                         {"MASTER_ADDR", "node-0.svc"},
                         {"MASTER_PORT", "29500"},
                         {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                         {"TORCHELASTIC_RESTART_COUNT", "2"}}));
  ASSERT_TRUE(launch.ok()) << launch.status();
  EXPECT_EQ(launch->launcher, "torchrun");
  EXPECT_EQ(launch->rank, 5);
  EXPECT_EQ(launch->local_rank, 1);
  EXPECT_EQ(launch->world_size, 8);
  EXPECT_EQ(launch->local_world_size, 4);
  EXPECT_EQ(launch->master_addr, "node-0.svc");
  EXPECT_EQ(launch->master_port, 29500);
  EXPECT_TRUE(launch->agent_store);
  EXPECT_EQ(launch->restart_count, 2);
  EXPECT_TRUE(launch->distributed());
}

TEST(LaunchTest, TorchrunWithoutAgentStore) {
  absl::StatusOr<LaunchEnv> launch =
      ReadLaunchEnv(Env({{"RANK", "0"},
                         {"LOCAL_RANK", "0"},
                         {"WORLD_SIZE", "2"},
                         {"MASTER_ADDR", "127.0.0.1"},
                         {"MASTER_PORT", "1234"},
                         {"TORCHELASTIC_USE_AGENT_STORE", "False"}}));
  ASSERT_TRUE(launch.ok()) << launch.status();
  EXPECT_FALSE(launch->agent_store);
  EXPECT_EQ(launch->local_world_size, 2);  // LOCAL_WORLD_SIZE unset
  EXPECT_EQ(launch->restart_count, 0);
}

TEST(LaunchTest, TorchrunErrorsNameTheVariable) {
  const std::map<std::string, std::string> good = {{"RANK", "1"},
                                                   {"LOCAL_RANK", "1"},
                                                   {"WORLD_SIZE", "2"},
                                                   {"MASTER_ADDR", "h"},
                                                   {"MASTER_PORT", "29500"}};
  struct Case {
    std::string name, value, message;
  };
  for (const Case& c :
       std::vector<Case>{{"RANK", "2", "RANK=2 is not below WORLD_SIZE=2"},
                         {"RANK", "x", "RANK=\"x\""},
                         {"WORLD_SIZE", "0", "WORLD_SIZE=\"0\""},
                         {"MASTER_PORT", "70000", "MASTER_PORT=\"70000\""},
                         {"MASTER_ADDR", "", "MASTER_ADDR is not set"},
                         {"LOCAL_WORLD_SIZE", "1", "local rank 1"},
                         {"TORCHELASTIC_USE_AGENT_STORE", "maybe",
                          "TORCHELASTIC_USE_AGENT_STORE=\"maybe\""}}) {
    std::map<std::string, std::string> vars = good;
    vars[c.name] = c.value;
    absl::StatusOr<LaunchEnv> launch = ReadLaunchEnv(Env(vars));
    ASSERT_FALSE(launch.ok()) << c.name;
    EXPECT_EQ(launch.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(launch.status().message(), HasSubstr(c.message)) << c.name;
  }
  std::map<std::string, std::string> missing = good;
  missing.erase("LOCAL_RANK");
  EXPECT_THAT(ReadLaunchEnv(Env(missing)).status().message(),
              HasSubstr("LOCAL_RANK is not set"));
}

TEST(LaunchTest, SlurmMapsProcIdLocalIdAndTasks) {
  absl::StatusOr<LaunchEnv> launch =
      ReadLaunchEnv(Env({{"SLURM_PROCID", "6"},
                         {"SLURM_LOCALID", "2"},
                         {"SLURM_NTASKS", "8"},
                         {"SLURM_NTASKS_PER_NODE", "4(x2)"},
                         {"SLURM_JOB_NODELIST", "gpu[007-008,012],cpu1"},
                         {"SLURM_JOB_ID", "123456"}}));
  ASSERT_TRUE(launch.ok()) << launch.status();
  EXPECT_EQ(launch->launcher, "slurm");
  EXPECT_EQ(launch->rank, 6);
  EXPECT_EQ(launch->local_rank, 2);
  EXPECT_EQ(launch->world_size, 8);
  EXPECT_EQ(launch->local_world_size, 4);
  EXPECT_EQ(launch->master_addr, "gpu007");
  EXPECT_EQ(launch->master_port, SlurmDefaultPort(123456));
  EXPECT_EQ(launch->master_port, 15000 + 123456 % 20000);
  EXPECT_FALSE(launch->agent_store);
}

TEST(LaunchTest, SlurmMasterVariablesWin) {
  absl::StatusOr<LaunchEnv> launch =
      ReadLaunchEnv(Env({{"SLURM_PROCID", "0"},
                         {"SLURM_LOCALID", "0"},
                         {"SLURM_NTASKS", "2"},
                         {"SLURM_JOB_NODELIST", "a1,a2"},
                         {"MASTER_ADDR", "10.0.0.9"},
                         {"MASTER_PORT", "4000"}}));
  ASSERT_TRUE(launch.ok()) << launch.status();
  EXPECT_EQ(launch->master_addr, "10.0.0.9");
  EXPECT_EQ(launch->master_port, 4000);
}

TEST(LaunchTest, SlurmErrors) {
  EXPECT_THAT(ReadLaunchEnv(Env({{"SLURM_NTASKS", "2"},
                                 {"SLURM_LOCALID", "0"},
                                 {"SLURM_JOB_NODELIST", "a"},
                                 {"SLURM_JOB_ID", "1"}}))
                  .status()
                  .message(),
              HasSubstr("SLURM_PROCID is not set"));
  EXPECT_THAT(ReadLaunchEnv(Env({{"SLURM_NTASKS", "2"},
                                 {"SLURM_PROCID", "1"},
                                 {"SLURM_LOCALID", "0"},
                                 {"SLURM_JOB_ID", "1"}}))
                  .status()
                  .message(),
              HasSubstr("SLURM_JOB_NODELIST"));
  EXPECT_THAT(ReadLaunchEnv(Env({{"SLURM_NTASKS", "2"},
                                 {"SLURM_PROCID", "1"},
                                 {"SLURM_LOCALID", "0"},
                                 {"SLURM_JOB_NODELIST", "n[1-"}}))
                  .status()
                  .message(),
              HasSubstr("unbalanced"));
  EXPECT_THAT(ReadLaunchEnv(Env({{"SLURM_NTASKS", "2"},
                                 {"SLURM_PROCID", "1"},
                                 {"SLURM_LOCALID", "0"},
                                 {"SLURM_JOB_NODELIST", "n1"}}))
                  .status()
                  .message(),
              HasSubstr("SLURM_JOB_ID"));
}

TEST(LaunchTest, FirstSlurmHost) {
  EXPECT_EQ(*FirstSlurmHost("node1"), "node1");
  EXPECT_EQ(*FirstSlurmHost("node1,node2"), "node1");
  EXPECT_EQ(*FirstSlurmHost("gpu[003-007,012]"), "gpu003");
  EXPECT_EQ(*FirstSlurmHost("gpu[12,3-4],cpu[1-2]"), "gpu12");
  EXPECT_EQ(*FirstSlurmHost("rack[2-3]-n[08-11]-ib"), "rack2-n08-ib");
  EXPECT_FALSE(FirstSlurmHost("").ok());
  EXPECT_FALSE(FirstSlurmHost("n[a-b]").ok());
  EXPECT_FALSE(FirstSlurmHost("n[1-2").ok());
}

}  // namespace
}  // namespace microrl::distributed
