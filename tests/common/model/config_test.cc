#include "common/model/config.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace microrl::model {
namespace {

using ::testing::HasSubstr;

// The config.json of Qwen2.5-1.5B-Instruct as published on the Hub.
constexpr char kQwen25[] = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 1536,
  "initializer_range": 0.02, "intermediate_size": 8960, "max_position_embeddings": 32768,
  "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 12,
  "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936})";

// Llama-3.2-1B-Instruct.
constexpr char kLlama32[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
  "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072,
  "mlp_bias": false, "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "vocab_size": 128256})";

// Qwen3-0.6B.
constexpr char kQwen3[] = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "eos_token_id": 151645,
  "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "num_attention_heads": 16, "num_hidden_layers": 28,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null,
  "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 151936})";

TEST(ModelConfigTest, ParsesQwen25AsPublished) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(kQwen25, "qwen");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, Architecture::kQwen2);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_EQ(config->num_kv_heads, 2);
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_FALSE(config->o_bias);
  EXPECT_FALSE(config->qk_norm);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->rope.theta, 1e6);
  EXPECT_FALSE(config->rope.llama3_scaling);
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{151645}));
  EXPECT_EQ(config->dtype, "bfloat16");
}

TEST(ModelConfigTest, ParsesLlama32WithLlama3RopeScaling) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(kLlama32, "llama");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, Architecture::kLlama);
  EXPECT_EQ(config->head_dim, 64);
  EXPECT_FALSE(config->qkv_bias);
  EXPECT_TRUE(config->rope.llama3_scaling);
  EXPECT_EQ(config->rope.factor, 32.0);
  EXPECT_EQ(config->rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(config->rope.theta, 500000.0);
  EXPECT_EQ(config->eos_token_ids,
            (std::vector<int64_t>{128001, 128008, 128009}));
}

TEST(ModelConfigTest, ParsesQwen3WithQkNormAndTransformers5RopeParameters) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(kQwen3, "qwen3");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->qk_norm);
  EXPECT_FALSE(config->qkv_bias);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_NE(config->num_heads * config->head_dim, config->hidden_size);

  absl::StatusOr<ModelConfig> v5 = ParseModelConfig(
      R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
          "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
          "rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 32}})",
      "v5");
  ASSERT_TRUE(v5.ok()) << v5.status();
  EXPECT_TRUE(v5->rope.llama3_scaling);
  EXPECT_EQ(v5->rope.theta, 10000.0);
  EXPECT_EQ(v5->num_kv_heads, 2);  // defaults to num_attention_heads
  EXPECT_EQ(v5->head_dim, 4);
}

TEST(ModelConfigTest, RefusesWhatItCannotRunWithAClearError) {
  const std::string base =
      R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
         "num_hidden_layers": 1, "num_attention_heads": 2)";
  struct Case {
    std::string json;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{", absl::StatusCode::kInvalidArgument, "not a JSON object"},
      {"{" + base + "}", absl::StatusCode::kInvalidArgument,
       "missing \"architectures\""},
      {R"({"architectures": ["GPT2LMHeadModel"], )" + base + "}",
       absl::StatusCode::kUnimplemented, "GPT2LMHeadModel is not supported"},
      {R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10})",
       absl::StatusCode::kInvalidArgument, "missing \"hidden_size\""},
      {R"({"architectures": ["Qwen2ForCausalLM"], "use_sliding_window": true, )" +
           base + "}",
       absl::StatusCode::kUnimplemented, "sliding-window"},
      {R"({"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "yarn",
           "factor": 4.0}, )" +
           base + "}",
       absl::StatusCode::kUnimplemented, "\"yarn\" is not supported"},
      {R"({"architectures": ["LlamaForCausalLM"], "num_key_value_heads": 3, )" +
           base + "}",
       absl::StatusCode::kInvalidArgument,
       "not a multiple of num_key_value_heads"},
      {R"({"architectures": ["LlamaForCausalLM"], "hidden_act": "gelu", )" +
           base + "}",
       absl::StatusCode::kUnimplemented, "hidden_act"},
      {R"({"architectures": ["LlamaForCausalLM"], "hidden_size": -8, "vocab_size": 10})",
       absl::StatusCode::kInvalidArgument, "must be a positive integer"},
      {R"({"architectures": ["LlamaForCausalLM"], "eos_token_id": "x", )" +
           base + "}",
       absl::StatusCode::kInvalidArgument, "eos_token_id"},
  };
  for (const Case& c : cases) {
    const absl::Status status = ParseModelConfig(c.json, "cfg.json").status();
    EXPECT_EQ(status.code(), c.code) << c.json;
    EXPECT_THAT(std::string(status.message()), HasSubstr("cfg.json")) << c.json;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << status;
  }
}

TEST(ModelConfigTest, GenerationConfigEosWins) {
  const std::string dir = testing::MakeTempDir();
  std::ofstream(dir + "/config.json") << kQwen25;
  std::ofstream(dir + "/generation_config.json")
      << R"({"eos_token_id": [151645, 151643]})";
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{151645, 151643}));
  EXPECT_EQ(LoadModelConfig(dir + "/none").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace microrl::model
