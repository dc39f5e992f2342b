#ifndef MICRORL_LEARNER_SFT_H_
#define MICRORL_LEARNER_SFT_H_

#include "absl/status/status.h"
#include "learner/config.h"

namespace microrl::learner {

// `learner sft`: a supervised warm-up of the LoRA adapter (the paper's proposed
// "reasoning warm-up" before RLVR). Trains on JSONL records of a problem
// (data.problem_field, rendered into the prompt as for GRPO) and a worked
// completion (data.completion_field, followed by the chat template's
// end-of-turn token): the loss is the mean negative log-likelihood of the
// completion tokens. run.max_steps optimizer steps of sft.batch_size records
// each (in the per-epoch order of run.seed), AdamW with optim.*; logs loss and
// token accuracy to <run>/metrics.jsonl and a progress line, and writes the
// adapter (PEFT) to <run>/adapter, for `lora.init` of a GRPO run.
absl::Status RunSft(const TrainConfig& config);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_SFT_H_
