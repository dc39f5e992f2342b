#ifndef MICRORL_LEARNER_OPTIMIZER_H_
#define MICRORL_LEARNER_OPTIMIZER_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace microrl::learner {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double weight_decay = 0.0;
};

// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias
// correction), with float32 state whatever the parameters' dtype. Parameters
// are updated in place from their .grad(); those without a gradient are
// skipped.
class AdamW {
 public:
  AdamW(std::vector<at::Tensor> parameters, const AdamWOptions& options);

  void Step(double lr);
  void ZeroGrad();
  int64_t steps() const { return steps_; }

  // State for checkpoints: "exp_avg.<i>", "exp_avg_sq.<i>" per parameter, and
  // the step count.
  std::vector<std::pair<std::string, at::Tensor>> State() const;
  absl::Status LoadState(const std::map<std::string, at::Tensor>& state,
                         int64_t steps);

 private:
  std::vector<at::Tensor> parameters_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_;
  std::vector<at::Tensor> exp_avg_sq_;
  int64_t steps_ = 0;
};

// Scales gradients so their global L2 norm is at most max_norm (as
// torch.nn.utils.clip_grad_norm_); returns the norm before clipping. max_norm
// <= 0 only measures.
double ClipGradNorm(const std::vector<at::Tensor>& parameters, double max_norm);

struct ScheduleOptions {
  double lr = 1e-5;
  bool cosine = false;  // else constant after warmup
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;
};

// The learning rate of optimizer step `step` (0-based): linear warmup from 0
// over warmup_steps, then constant or cosine decay to min_lr_ratio * lr at
// total_steps (transformers' get_cosine_schedule_with_warmup when
// min_lr_ratio is 0).
double LearningRate(const ScheduleOptions& options, int64_t step);

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_OPTIMIZER_H_
