// The training configuration: YAML sections, `base` files, overrides, errors
// that name file and line, validation, and the resolved dump reading back.
#include "learner/config.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace microrl::learner {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"(
model:
  path: /models/qwen
data:
  train: /data/train.jsonl
)";

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST(ConfigTest, ReadsSectionsAndKeepsDefaults) {
  absl::StatusOr<TrainConfig> config =
      ParseTrainConfig(std::string(kMinimal) + R"(
lora:
  rank: 256
  alpha: 512
  targets: [q_proj, v_proj]
grpo:
  clip_high: 0.28
  loss_aggregation: seq-mean-token-sum-norm
optim:
  lr: 1.0e-6
  schedule: cosine
)",
                       "test.yaml", {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_path, "/models/qwen");
  EXPECT_EQ(config->lora_rank, 256);
  EXPECT_EQ(config->lora_alpha, 512);
  EXPECT_EQ(config->lora_targets,
            (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(config->clip_high, 0.28);
  EXPECT_EQ(config->lr, 1e-6);
  EXPECT_EQ(config->group_size, 8);  // default
  EXPECT_EQ(config->max_response_tokens, 3584);
}

TEST(ConfigTest, OverridesWinAndAreChecked) {
  absl::StatusOr<TrainConfig> config = ParseTrainConfig(
      kMinimal, "test.yaml",
      {"optim.lr=3e-5", "lora.targets=[q_proj]", "run.name=abc"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->lr, 3e-5);
  EXPECT_EQ(config->lora_targets, std::vector<std::string>{"q_proj"});
  EXPECT_EQ(config->run_name, "abc");
  EXPECT_THAT(ParseTrainConfig(kMinimal, "t", {"optim.lr"}).status().message(),
              HasSubstr("expected section.key=value"));
  EXPECT_THAT(
      ParseTrainConfig(kMinimal, "t", {"optim.rate=1"}).status().message(),
      HasSubstr("unknown key optim.rate"));
  EXPECT_THAT(
      ParseTrainConfig(kMinimal, "t", {"optim.lr=fast"}).status().message(),
      HasSubstr("optim.lr: expected a number \"fast\""));
}

TEST(ConfigTest, ErrorsNameTheFileAndLine) {
  auto error = [](const std::string& yaml) {
    return std::string(
        ParseTrainConfig(yaml, "run.yaml", {}).status().message());
  };
  EXPECT_THAT(error(std::string(kMinimal) + "grpo:\n  kl_cof: 0.1\n"),
              HasSubstr("run.yaml:7: unknown key grpo.kl_cof"));
  EXPECT_THAT(
      error(std::string(kMinimal) + "rollout:\n  group_size: eight\n"),
      HasSubstr(
          "run.yaml:7: rollout.group_size: expected an integer \"eight\""));
  EXPECT_THAT(error(std::string(kMinimal) + "trainer:\n  x: 1\n"),
              HasSubstr("run.yaml:6: unknown section \"trainer\""));
  EXPECT_THAT(error("model: [unclosed\n"), HasSubstr("run.yaml:"));
  EXPECT_THAT(error("data:\n  train: x\n"),
              HasSubstr("model.path: is required"));
  EXPECT_THAT(error(std::string(kMinimal) + "rollout:\n  group_size: 1\n"),
              HasSubstr("rollout.group_size: must be >= 2"));
  EXPECT_THAT(
      error(std::string(kMinimal) + "grpo:\n  loss_aggregation: mean\n"),
      HasSubstr("grpo.loss_aggregation"));
  EXPECT_THAT(error(std::string(kMinimal) + "lora:\n  targets: [qkv_proj]\n"),
              HasSubstr("lora.targets: modules are"));
  EXPECT_THAT(error(std::string(kMinimal) + "rollout:\n  publish_via: shm\n"),
              HasSubstr("rollout.publish_via: must be auto, grpc or cuda_ipc"));
  EXPECT_THAT(
      error(std::string(kMinimal) + "rollout:\n  publish_via: cuda_ipc\n"),
      HasSubstr("cuda_ipc needs the learner on a GPU"));
  EXPECT_THAT(
      error(std::string(kMinimal) + "rollout:\n  publish_dtype: float16\n"),
      HasSubstr("rollout.publish_dtype: must be auto, float32 or bfloat16"));
  EXPECT_THAT(error(std::string(kMinimal) + "model:\n  gpu_memory_gib: -2\n"),
              HasSubstr("model.gpu_memory_gib: must be >= 0"));
  EXPECT_THAT(error(std::string(kMinimal) + "run:\n  output_dir: \"\"\n"),
              HasSubstr("run.output_dir"));
}

TEST(ConfigTest, DistributedSection) {
  absl::StatusOr<TrainConfig> config =
      ParseTrainConfig(std::string(kMinimal) + R"(
distributed:
  enabled: false
  timeout_s: 30
  rollout_port_per_rank: false
  eval_wait_s: 60
  check_every: 5
)",
                       "test.yaml", {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->distributed_enabled);
  EXPECT_EQ(config->distributed_timeout_s, 30);
  EXPECT_FALSE(config->rollout_port_per_rank);
  EXPECT_EQ(config->distributed_eval_wait_s, 60);
  EXPECT_EQ(config->distributed_check_every, 5);
  absl::StatusOr<TrainConfig> defaults = ParseTrainConfig(kMinimal, "t", {});
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->distributed_enabled);
  EXPECT_TRUE(defaults->rollout_port_per_rank);
  for (const auto& [bad, key] :
       {std::pair{"distributed.timeout_s=0", "distributed.timeout_s"},
        std::pair{"distributed.eval_wait_s=-1", "distributed.eval_wait_s"},
        std::pair{"distributed.check_every=-2", "distributed.check_every"},
        std::pair{"rollout.addresses=[a:1, b]", "rollout.addresses"},
        std::pair{"rollout.redispatch_after_s=0",
                  "rollout.redispatch_after_s"}}) {
    EXPECT_THAT(ParseTrainConfig(kMinimal, "t", {bad}).status().message(),
                HasSubstr(key));
  }
  // Several rollout servers (Mode B).
  absl::StatusOr<TrainConfig> pool = ParseTrainConfig(
      kMinimal, "t", {"rollout.addresses=[h1:50051, \"[::1]:50052\"]"});
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->rollout_addresses,
            (std::vector<std::string>{"h1:50051", "[::1]:50052"}));
  EXPECT_TRUE(ParseTrainConfig(kMinimal, "t",
                               {"rollout.addresses=[\"dns:rollout:50051\"]"})
                  .ok());
  EXPECT_THAT(
      ParseTrainConfig(kMinimal, "t", {"rollout.addresses=[\"dns:rollout\"]"})
          .status()
          .message(),
      HasSubstr("host:port or dns:name:port"));
  EXPECT_THAT(ParseTrainConfig(
                  kMinimal, "t",
                  {"rollout.addresses=[h1:1, h2:2]", "rollout.colocated=true"})
                  .status()
                  .message(),
              HasSubstr("rollout.colocated: needs a single rollout server"));
}

TEST(ConfigTest, BoundedStalenessAndItsCorrection) {
  // TIS is off without staleness and on (cap 2) with it, unless set.
  absl::StatusOr<TrainConfig> sync = ParseTrainConfig(kMinimal, "t", {});
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_EQ(sync->max_staleness, 0);
  EXPECT_EQ(sync->tis_cap, 0);
  absl::StatusOr<TrainConfig> stale = ParseTrainConfig(
      kMinimal, "t",
      {"rollout.max_staleness=2", "grpo.old_logprobs=recompute",
       "grpo.is_mask=sequence", "grpo.is_mask_low=0.8"});
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_EQ(stale->tis_cap, 2);
  EXPECT_EQ(stale->is_mask, IsMask::kSequence);
  EXPECT_EQ(stale->is_mask_low, 0.8);
  // The resolved value is what config.yaml keeps.
  EXPECT_THAT(TrainConfigToYaml(*stale), HasSubstr("tis_cap: 2"));
  absl::StatusOr<TrainConfig> off =
      ParseTrainConfig(kMinimal, "t",
                       {"rollout.max_staleness=1",
                        "grpo.old_logprobs=recompute", "grpo.tis_cap=0"});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->tis_cap, 0);
  auto refused = [](const std::vector<std::string>& overrides) {
    return std::string(
        ParseTrainConfig(kMinimal, "t", overrides).status().message());
  };
  EXPECT_THAT(refused({"rollout.max_staleness=1"}),
              HasSubstr("rollout.max_staleness: needs grpo.old_logprobs: "
                        "recompute"));
  EXPECT_THAT(refused({"rollout.max_staleness=1", "grpo.old_logprobs=recompute",
                       "rollout.colocated=true"}),
              HasSubstr("on their own devices"));
  EXPECT_THAT(refused({"rollout.max_staleness=16"}),
              HasSubstr("must be in [0, 15]"));
  EXPECT_THAT(refused({"grpo.tis_cap=2"}),
              HasSubstr("grpo.tis_cap: needs grpo.old_logprobs: recompute"));
  EXPECT_THAT(refused({"grpo.is_mask=token"}),
              HasSubstr("grpo.is_mask: needs grpo.old_logprobs: recompute"));
  EXPECT_THAT(refused({"grpo.tis_cap=-2"}), HasSubstr("grpo.tis_cap: must be"));
  EXPECT_THAT(refused({"grpo.is_mask=tokens"}),
              HasSubstr("must be none, token or sequence"));
  EXPECT_THAT(refused({"grpo.old_logprobs=recompute", "grpo.is_mask_high=0.9"}),
              HasSubstr("grpo.is_mask_low: must be in [0, 1]"));
}

TEST(ConfigTest, BaseFilesAreReadFirst) {
  const std::string dir = testing::MakeTempDir();
  Write(dir + "/common.yaml",
        std::string(kMinimal) + "optim:\n  lr: 2.0e-6\nlora:\n  rank: 8\n");
  Write(dir + "/run.yaml", "base: common.yaml\nlora:\n  rank: 64\n");
  absl::StatusOr<TrainConfig> config =
      LoadTrainConfig(dir + "/run.yaml", {"lora.alpha=7"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->lora_rank, 64);
  EXPECT_EQ(config->lr, 2e-6);
  EXPECT_EQ(config->lora_alpha, 7);
  EXPECT_THAT(LoadTrainConfig(dir + "/missing.yaml", {}).status().message(),
              HasSubstr("missing.yaml"));
}

TEST(ConfigTest, TheResolvedDumpReadsBackTheSame) {
  absl::StatusOr<TrainConfig> config =
      ParseTrainConfig(kMinimal, "t",
                       {"data.instruction=Solve: {problem}", "optim.lr=1.5e-7",
                        "data.system_prompt=You are \"careful\".\nThink."});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::string yaml = TrainConfigToYaml(*config);
  absl::StatusOr<TrainConfig> again = ParseTrainConfig(yaml, "dump", {});
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << yaml;
  EXPECT_EQ(TrainConfigToYaml(*again), yaml);
  EXPECT_EQ(again->system_prompt, "You are \"careful\".\nThink.");
  EXPECT_EQ(again->lr, 1.5e-7);
  EXPECT_THAT(yaml, HasSubstr("grpo:\n"));
}

TEST(ConfigTest, ThePapersPresetsAreValid) {
  const std::string dir = std::string(MICRORL_SOURCE_DIR) + "/configs/paper";
  int presets = 0;
  for (const std::string model :
       {"qwen2.5-1.5b-instruct", "qwen2.5-math-1.5b", "deepscaler-1.5b-preview",
        "qwen3-0.6b", "llama3.2-1b-instruct"}) {
    for (int rank : {8, 64, 256}) {
      const std::string name = model + "-r" + std::to_string(rank);
      absl::StatusOr<TrainConfig> config =
          LoadTrainConfig(dir + "/" + name + ".yaml", {});
      ASSERT_TRUE(config.ok()) << name << ": " << config.status();
      EXPECT_EQ(config->run_name, name);
      EXPECT_EQ(config->lora_rank, rank);
      EXPECT_EQ(config->max_response_tokens, 3584);
      EXPECT_EQ(config->time_budget_hours, 24);
      ++presets;
    }
  }
  EXPECT_EQ(presets, 15);
}

}  // namespace
}  // namespace microrl::learner
