#include "learner/optimizer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace microrl::learner {

AdamW::AdamW(std::vector<at::Tensor> parameters, const AdamWOptions& options)
    : parameters_(std::move(parameters)), options_(options) {
  for (const at::Tensor& p : parameters_) {
    exp_avg_.push_back(at::zeros(p.sizes(), p.options().dtype(at::kFloat)));
    exp_avg_sq_.push_back(at::zeros(p.sizes(), p.options().dtype(at::kFloat)));
  }
}

void AdamW::Step(double lr) {
  at::NoGradGuard no_grad;
  ++steps_;
  const double bias1 =
      1 - std::pow(options_.beta1, static_cast<double>(steps_));
  const double bias2 =
      1 - std::pow(options_.beta2, static_cast<double>(steps_));
  const double step_size = lr / bias1;
  const double bias2_sqrt = std::sqrt(bias2);
  for (size_t i = 0; i < parameters_.size(); ++i) {
    at::Tensor& p = parameters_[i];
    const at::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    const at::Tensor g = grad.to(at::kFloat);
    at::Tensor master = p.scalar_type() == at::kFloat ? p : p.to(at::kFloat);
    if (options_.weight_decay != 0) master.mul_(1 - lr * options_.weight_decay);
    exp_avg_[i].lerp_(g, 1 - options_.beta1);
    exp_avg_sq_[i].mul_(options_.beta2).addcmul_(g, g, 1 - options_.beta2);
    const at::Tensor denom =
        (exp_avg_sq_[i].sqrt() / bias2_sqrt).add_(options_.epsilon);
    master.addcdiv_(exp_avg_[i], denom, -step_size);
    if (!master.is_same(p)) p.copy_(master);
  }
}

void AdamW::ZeroGrad() {
  for (at::Tensor& p : parameters_) {
    if (p.grad().defined()) p.mutable_grad().reset();
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::State() const {
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    state.emplace_back(absl::StrCat("exp_avg.", i), exp_avg_[i]);
    state.emplace_back(absl::StrCat("exp_avg_sq.", i), exp_avg_sq_[i]);
  }
  return state;
}

absl::Status AdamW::LoadState(const std::map<std::string, at::Tensor>& state,
                              int64_t steps) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    for (auto [name, target] :
         {std::pair{absl::StrCat("exp_avg.", i), &exp_avg_[i]},
          std::pair{absl::StrCat("exp_avg_sq.", i), &exp_avg_sq_[i]}}) {
      auto it = state.find(name);
      if (it == state.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("optimizer state lacks ", name));
      }
      if (!it->second.sizes().equals(target->sizes())) {
        return absl::InvalidArgumentError(
            absl::StrCat("optimizer state ", name, " has shape ",
                         c10::str(it->second.sizes()), ", the parameter ",
                         c10::str(target->sizes())));
      }
      target->copy_(it->second);
    }
  }
  steps_ = steps;
  return absl::OkStatus();
}

double ClipGradNorm(const std::vector<at::Tensor>& parameters,
                    double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const at::Tensor& p : parameters) {
    if (p.grad().defined()) norms.push_back(p.grad().to(at::kFloat).norm());
  }
  if (norms.empty()) return 0;
  const double total = at::stack(norms).norm().item<double>();
  if (max_norm > 0) {
    const double scale = max_norm / (total + 1e-6);
    if (scale < 1) {
      for (const at::Tensor& p : parameters) {
        if (p.grad().defined()) p.grad().mul_(scale);
      }
    }
  }
  return total;
}

double LearningRate(const ScheduleOptions& o, int64_t step) {
  if (step < o.warmup_steps) {
    return o.lr * static_cast<double>(step) /
           static_cast<double>(std::max<int64_t>(1, o.warmup_steps));
  }
  if (!o.cosine) return o.lr;
  const double progress =
      static_cast<double>(step - o.warmup_steps) /
      static_cast<double>(std::max<int64_t>(1, o.total_steps - o.warmup_steps));
  const double cosine = 0.5 * (1 + std::cos(M_PI * std::min(progress, 1.0)));
  return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * cosine);
}

}  // namespace microrl::learner
