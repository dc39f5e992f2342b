#include "learner/sft.h"

#include <ATen/ATen.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/base/file.h"
#include "common/base/logging.h"
#include "common/base/signals.h"
#include "common/device/device.h"
#include "common/model/decoder.h"
#include "common/model/lora.h"
#include "learner/data.h"
#include "learner/optimizer.h"
#include "learner/policy_update.h"
#include "learner/run_setup.h"
#include "nlohmann/json.hpp"

namespace microrl::learner {

absl::Status RunSft(const TrainConfig& config) {
  const std::string run_dir = config.output_dir + "/" + config.run_name;
  std::error_code error;
  std::filesystem::create_directories(run_dir, error);
  if (error)
    return absl::InternalError(absl::StrCat("cannot create ", run_dir));
  if (absl::Status s = WriteFileAtomically(run_dir + "/config.yaml",
                                           TrainConfigToYaml(config));
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::unique_ptr<model::Decoder>> decoder =
      LoadTrainingDecoder(config);
  if (!decoder.ok()) return decoder.status();
  absl::StatusOr<std::unique_ptr<model::LoraAdapter>> adapter =
      CreateOrLoadAdapter(config, **decoder);
  if (!adapter.ok()) return adapter.status();

  absl::StatusOr<PromptBuilder> prompts = PromptBuilder::Create(
      config.model_path, config.system_prompt, config.instruction);
  if (!prompts.ok()) return prompts.status();
  absl::StatusOr<std::vector<Problem>> records = LoadProblems(
      config.train_path, config.problem_field, config.completion_field);
  if (!records.ok()) return records.status();
  const int32_t eos =
      prompts->eos_token().empty()
          ? -1
          : prompts->tokenizer().TokenToId(prompts->eos_token());
  // Tokenized once: prompt ids and completion ids (+ end of turn).
  std::vector<Sample> data;
  for (const Problem& record : *records) {
    absl::StatusOr<std::vector<int32_t>> ids = prompts->Ids(record);
    if (!ids.ok()) return ids.status();
    Sample sample;
    sample.prompt = *std::move(ids);
    absl::StatusOr<std::vector<int32_t>> answer =
        prompts->tokenizer().EncodeChecked(record.answer, false);
    if (!answer.ok()) return answer.status();
    sample.completion = *std::move(answer);
    if (eos >= 0) sample.completion.push_back(eos);
    sample.rollout_logprobs.assign(sample.completion.size(), 0.0f);
    data.push_back(std::move(sample));
  }

  AdamW optimizer(
      (*adapter)->Parameters(),
      {config.beta1, config.beta2, config.adam_epsilon, config.weight_decay});
  UpdateOptions update;
  update.gradient_checkpointing = config.gradient_checkpointing;
  PolicyUpdater scorer(**decoder, **adapter, optimizer, update);
  const ScheduleOptions schedule = ScheduleFrom(config, config.max_steps);
  EpochSampler sampler(static_cast<int64_t>(data.size()), config.seed);
  std::ofstream log(run_dir + "/metrics.jsonl");
  const absl::Time start = absl::Now();
  // SIGTERM or SIGINT (blocked by main, taken here) stops the warm-up after
  // the step in flight; the adapter of the steps done is saved as at the end.
  int stopped_by = 0;
  int64_t steps_done = 0;
  for (int64_t step = 0; step < config.max_steps && stopped_by == 0; ++step) {
    std::vector<Sample> batch;
    for (int64_t index : sampler.Next(config.sft_batch_size))
      batch.push_back(data[index]);
    optimizer.ZeroGrad();
    absl::StatusOr<PolicyUpdater::TokenTensors> scored =
        scorer.Score(batch, adapter->get(), /*with_grad=*/true);
    if (!scored.ok()) return scored.status();
    const at::Tensor tokens = scored->mask.sum();
    const at::Tensor loss = -(scored->logprobs * scored->mask).sum() / tokens;
    loss.backward();
    const double norm =
        ClipGradNorm((*adapter)->Parameters(), config.max_grad_norm);
    const double lr = LearningRate(schedule, step);
    if (std::isfinite(norm)) optimizer.Step(lr);
    // Token accuracy: the completion token had probability > 1/2, i.e. is
    // surely the argmax.
    const double sure =
        ((scored->logprobs.detach() > std::log(0.5)).to(at::kFloat) *
         scored->mask)
            .sum()
            .item<double>() /
        tokens.item<double>();
    const nlohmann::ordered_json line = {{"step", step + 1},
                                         {"loss", loss.item<double>()},
                                         {"token_accuracy", sure},
                                         {"grad_norm", norm},
                                         {"lr", lr},
                                         {"epoch", sampler.epoch()}};
    log << line.dump() << "\n";
    steps_done = step + 1;
    stopped_by = TakePendingTerminationSignal();
    if ((step + 1) % 10 == 0 || step + 1 == config.max_steps ||
        stopped_by != 0) {
      log.flush();
      std::cout << absl::StrFormat(
                       "sft step %d/%d | loss %.4f | token acc %.3f | %.1f s",
                       step + 1, config.max_steps, loss.item<double>(), sure,
                       absl::ToDoubleSeconds(absl::Now() - start))
                << std::endl;
    }
  }
  if (stopped_by != 0) {
    std::cout << "sft stopped by "
              << (stopped_by == SIGINT    ? "SIGINT"
                  : stopped_by == SIGTERM ? "SIGTERM"
                                          : "a stop request")
              << " after step " << steps_done << " of " << config.max_steps
              << std::endl;
  }
  const std::string out = run_dir + "/adapter";
  if (absl::Status s = (*adapter)->SavePeft(out, config.model_path); !s.ok())
    return s;
  std::cout << "sft adapter (step " << steps_done << ") saved to " << out
            << std::endl;
  return absl::OkStatus();
}

}  // namespace microrl::learner
