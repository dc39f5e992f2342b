#include "tests/support/tiny_model.h"

#include <ATen/ATen.h>

#include "gtest/gtest.h"

namespace microrl::testing {

model::ModelConfig TinyConfig() {
  model::ModelConfig config;
  config.architecture = model::Architecture::kQwen2;
  config.vocab_size = 50;
  config.hidden_size = 32;
  config.intermediate_size = 48;
  config.num_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.head_dim = 8;
  config.qkv_bias = true;
  return config;
}

std::map<std::string, at::Tensor> TinyTensors(const model::ModelConfig& c) {
  at::manual_seed(0);
  std::map<std::string, at::Tensor> t;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    t[name] = at::randn(shape) * 0.2;
  };
  add("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  add("model.norm.weight", {c.hidden_size});
  add("lm_head.weight", {c.vocab_size, c.hidden_size});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {c.hidden_size});
    add(p + "post_attention_layernorm.weight", {c.hidden_size});
    add(p + "self_attn.q_proj.weight",
        {c.num_heads * c.head_dim, c.hidden_size});
    add(p + "self_attn.q_proj.bias", {c.num_heads * c.head_dim});
    add(p + "self_attn.k_proj.weight",
        {c.num_kv_heads * c.head_dim, c.hidden_size});
    add(p + "self_attn.k_proj.bias", {c.num_kv_heads * c.head_dim});
    add(p + "self_attn.v_proj.weight",
        {c.num_kv_heads * c.head_dim, c.hidden_size});
    add(p + "self_attn.v_proj.bias", {c.num_kv_heads * c.head_dim});
    add(p + "self_attn.o_proj.weight",
        {c.hidden_size, c.num_heads * c.head_dim});
    add(p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size});
    add(p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size});
    add(p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size});
  }
  return t;
}

std::unique_ptr<model::Decoder> TinyDecoder(const model::ModelConfig& config) {
  absl::StatusOr<std::unique_ptr<model::Decoder>> decoder =
      model::Decoder::FromTensors(config, TinyTensors(config), {});
  EXPECT_TRUE(decoder.ok()) << decoder.status();
  return decoder.ok() ? *std::move(decoder) : nullptr;
}

std::unique_ptr<model::LoraAdapter> RandomAdapter(
    const model::ModelConfig& config, model::LoraConfig lora, uint64_t seed) {
  absl::StatusOr<std::unique_ptr<model::LoraAdapter>> adapter =
      model::LoraAdapter::Create(config, lora, at::kCPU, /*seed=*/1);
  EXPECT_TRUE(adapter.ok()) << adapter.status();
  if (!adapter.ok()) return nullptr;
  at::NoGradGuard no_grad;
  at::manual_seed(seed);
  for (const at::Tensor& parameter : (*adapter)->Parameters()) {
    if (parameter.abs().sum().item<double>() == 0) {
      parameter.copy_(at::randn(parameter.sizes()) * 0.1);
    }
  }
  return *std::move(adapter);
}

}  // namespace microrl::testing
