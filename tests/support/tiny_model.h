#ifndef MICRORL_TESTS_SUPPORT_TINY_MODEL_H_
#define MICRORL_TESTS_SUPPORT_TINY_MODEL_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>

#include "common/model/config.h"
#include "common/model/decoder.h"
#include "common/model/lora.h"

namespace microrl::testing {

// A Qwen2-shaped config small enough for unit tests: vocab 50, hidden 32, two
// layers, GQA (4 query heads, 2 KV heads), q/k/v biases.
model::ModelConfig TinyConfig();

// Random weights (seeded, so every call gives the same) with the checkpoint
// names a Qwen2 model of `config` has.
std::map<std::string, at::Tensor> TinyTensors(const model::ModelConfig& config);

// A float32 CPU decoder over TinyTensors(config).
std::unique_ptr<model::Decoder> TinyDecoder(
    const model::ModelConfig& config = TinyConfig());

// An adapter whose B is non-zero too, so it changes the outputs; `seed` picks
// the weights.
std::unique_ptr<model::LoraAdapter> RandomAdapter(
    const model::ModelConfig& config, model::LoraConfig lora = {4, 8.0},
    uint64_t seed = 2);

}  // namespace microrl::testing

#endif  // MICRORL_TESTS_SUPPORT_TINY_MODEL_H_
