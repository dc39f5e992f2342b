#include "learner/policy_update.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/distributed/communicator.h"
#include "common/model/tensor_io.h"
#include "common/model/token_stats.h"

namespace microrl::learner {
namespace {

// Padded [B, T] float tensor of per-sample vectors.
at::Tensor PadRows(const std::vector<const std::vector<float>*>& rows,
                   int64_t width) {
  at::Tensor out = at::zeros({static_cast<int64_t>(rows.size()), width});
  float* data = out.data_ptr<float>();
  for (size_t b = 0; b < rows.size(); ++b) {
    std::copy(rows[b]->begin(), rows[b]->end(), data + b * width);
  }
  return out;
}

// Consecutive runs of samples whose padded size (count x longest) stays
// within `budget` tokens (a single longer sample runs alone).
std::vector<std::pair<size_t, size_t>> MicroBatches(
    const std::vector<Sample>& samples, size_t begin, size_t end,
    int64_t budget) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t start = begin;
  int64_t longest = 0;
  for (size_t i = begin; i < end; ++i) {
    const int64_t length = static_cast<int64_t>(samples[i].prompt.size() +
                                                samples[i].completion.size());
    const int64_t count = static_cast<int64_t>(i - start + 1);
    if (i > start && count * std::max(longest, length) > budget) {
      out.emplace_back(start, i);
      start = i;
      longest = 0;
    }
    longest = std::max(longest, length);
  }
  if (start < end) out.emplace_back(start, end);
  return out;
}

}  // namespace

PolicyUpdater::PolicyUpdater(const model::Decoder& decoder,
                             model::LoraAdapter& adapter, AdamW& optimizer,
                             const UpdateOptions& options)
    : decoder_(decoder),
      adapter_(adapter),
      optimizer_(optimizer),
      options_(options) {}

absl::StatusOr<PolicyUpdater::TokenTensors> PolicyUpdater::Score(
    absl::Span<const Sample> samples, const model::LoraAdapter* adapter,
    bool with_grad) const {
  const int64_t batch = static_cast<int64_t>(samples.size());
  int64_t longest = 0;
  int64_t width = 0;
  std::vector<int64_t>
      flat_rows;  // b * L + position predicting each completion token
  std::vector<int64_t> targets;
  std::vector<int64_t> row_b;
  std::vector<int64_t> row_t;
  for (const Sample& s : samples) {
    longest = std::max<int64_t>(longest, s.prompt.size() + s.completion.size());
    width = std::max<int64_t>(width, s.completion.size());
  }
  std::vector<int64_t> ids(batch * longest, 0);
  for (int64_t b = 0; b < batch; ++b) {
    const Sample& s = samples[b];
    if (s.prompt.empty() || s.completion.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample ", b, " has an empty prompt or completion"));
    }
    std::copy(s.prompt.begin(), s.prompt.end(), ids.begin() + b * longest);
    std::copy(s.completion.begin(), s.completion.end(),
              ids.begin() + b * longest + s.prompt.size());
    const int64_t p = static_cast<int64_t>(s.prompt.size());
    for (int64_t t = 0; t < static_cast<int64_t>(s.completion.size()); ++t) {
      flat_rows.push_back(b * longest + p - 1 + t);
      targets.push_back(s.completion[t]);
      row_b.push_back(b);
      row_t.push_back(t);
    }
  }
  const at::Device device = decoder_.options().device;
  at::AutoGradMode grad_mode(with_grad);
  model::RunOptions run;
  run.adapter = adapter;
  run.gradient_checkpointing = with_grad && options_.gradient_checkpointing;
  absl::StatusOr<at::Tensor> hidden = decoder_.Forward(
      model::HostToDevice(ids, at::kLong, device).view({batch, longest}), run);
  if (!hidden.ok()) return hidden.status();
  const at::Tensor rows =
      hidden->reshape({batch * longest, -1})
          .index_select(0, model::HostToDevice(flat_rows, at::kLong, device));
  absl::StatusOr<model::TokenStats> stats = model::ComputeTokenStats(
      rows, decoder_.lm_head(), model::HostToDevice(targets, at::kLong, device),
      options_.temperature,
      model::ChunkRowsForBudget(decoder_.config().vocab_size));
  if (!stats.ok()) return stats.status();
  const auto float_options =
      at::TensorOptions().dtype(at::kFloat).device(device);
  const at::Tensor b_index = model::HostToDevice(row_b, at::kLong, device);
  const at::Tensor t_index = model::HostToDevice(row_t, at::kLong, device);
  TokenTensors out;
  out.logprobs = at::zeros({batch, width}, float_options)
                     .index_put({b_index, t_index}, stats->logprobs);
  out.entropy = at::zeros({batch, width}, float_options)
                    .index_put({b_index, t_index}, stats->entropy);
  out.mask = at::zeros({batch, width}, float_options)
                 .index_put_({b_index, t_index}, at::ones({}, float_options));
  return out;
}

absl::StatusOr<UpdateStats> PolicyUpdater::Update(
    const std::vector<Sample>& samples, int64_t& step,
    const std::function<bool()>& stopping, const DataParallel* data_parallel) {
  UpdateStats stats;
  distributed::Communicator* const comm =
      data_parallel != nullptr ? data_parallel->communicator : nullptr;
  // Before the first optimizer step nothing has changed yet: a stop ends the
  // update at once, the gradients dropped.
  auto stop_now = [&] {
    if (!stopping || stats.optimizer_steps > 0 || !stopping()) return false;
    optimizer_.ZeroGrad();
    return true;
  };
  const absl::Status stopped =
      absl::CancelledError("stopping before the update's first optimizer step");
  const int64_t n = static_cast<int64_t>(samples.size());
  // This process's share [first, first + n) of the batch of `global`.
  const int64_t global = comm != nullptr ? data_parallel->global_samples : n;
  const int64_t first = comm != nullptr ? data_parallel->first_sample : 0;
  if (first < 0 || first + n > global) {
    return absl::InvalidArgumentError(
        absl::StrCat("samples [", first, ", ", first + n,
                     ") are not within the batch of ", global));
  }
  if (global == 0) return stats;
  const int64_t mini_batches = std::min(options_.mini_batches, global);
  const at::Device device = decoder_.options().device;
  const std::vector<at::Tensor> parameters = adapter_.Parameters();
  for (const Sample& s : samples) {
    if (s.rollout_logprobs.size() != s.completion.size()) {
      return absl::InvalidArgumentError(
          "a sample has not one rollout log-prob per token");
    }
    stats.tokens += static_cast<int64_t>(s.completion.size());
  }

  // Old log-probs: the rollout's, or recomputed with the adapter as it is now.
  std::vector<std::vector<float>> old_logprobs(n);
  for (int64_t i = 0; i < n; ++i) old_logprobs[i] = samples[i].rollout_logprobs;
  double mismatch_sum = 0;
  double mismatch_tokens = 0;
  auto add_mismatch = [&](const TokenTensors& scored, size_t begin) {
    const at::Tensor rollout = [&] {
      std::vector<const std::vector<float>*> rows;
      for (int64_t b = 0; b < scored.logprobs.size(0); ++b) {
        rows.push_back(&samples[begin + b].rollout_logprobs);
      }
      return PadRows(rows, scored.logprobs.size(1)).to(device);
    }();
    const at::Tensor diff =
        (scored.logprobs.detach() - rollout).abs() * scored.mask;
    mismatch_sum += diff.sum().item<double>();
    mismatch_tokens += scored.mask.sum().item<double>();
    stats.logprob_mismatch_max =
        std::max(stats.logprob_mismatch_max, diff.max().item<double>());
  };
  if (options_.recompute_old_logprobs) {
    for (const auto& [begin, end] :
         MicroBatches(samples, 0, n, options_.micro_batch_tokens)) {
      if (stop_now()) return stopped;
      absl::StatusOr<TokenTensors> scored =
          Score(absl::MakeConstSpan(samples).subspan(begin, end - begin),
                &adapter_, /*with_grad=*/false);
      if (!scored.ok()) return scored.status();
      add_mismatch(*scored, begin);
      const at::Tensor host = scored->logprobs.cpu();
      for (size_t b = begin; b < end; ++b) {
        const float* row = host[b - begin].data_ptr<float>();
        old_logprobs[b].assign(row, row + samples[b].completion.size());
      }
    }
  }

  double weight_sum = 0;  // tokens over which fractions are averaged
  for (int64_t epoch = 0; epoch < options_.epochs; ++epoch) {
    for (int64_t m = 0; m < mini_batches; ++m) {
      // Global mini-batch m, and this process's part of it (maybe none).
      auto local = [&](int64_t index) {
        return static_cast<size_t>(std::clamp<int64_t>(index - first, 0, n));
      };
      const size_t begin = local(global * m / mini_batches);
      const size_t end = local(global * (m + 1) / mini_batches);
      // The mini-batch's denominators, shared by its micro-batches (and, data
      // parallel, by every rank's part).
      LossNormalizer normalizer;
      normalizer.horizon = options_.horizon;
      for (size_t i = begin; i < end; ++i) {
        normalizer.tokens += static_cast<double>(samples[i].completion.size());
        normalizer.sequences += 1;
      }
      if (comm != nullptr) {
        const at::Tensor counts =
            at::tensor({normalizer.tokens, normalizer.sequences},
                       at::TensorOptions().dtype(at::kDouble).device(device));
        if (absl::Status s = comm->AllReduce({counts}); !s.ok()) return s;
        const at::Tensor host = counts.cpu();
        normalizer.tokens = host.data_ptr<double>()[0];
        normalizer.sequences = host.data_ptr<double>()[1];
      }
      optimizer_.ZeroGrad();
      at::Tensor sums;  // [12] doubles on the device, see below
      for (const auto& [mb_begin, mb_end] :
           MicroBatches(samples, begin, end, options_.micro_batch_tokens)) {
        if (stop_now()) return stopped;
        const absl::Span<const Sample> part =
            absl::MakeConstSpan(samples).subspan(mb_begin, mb_end - mb_begin);
        absl::StatusOr<TokenTensors> scored =
            Score(part, &adapter_, /*with_grad=*/true);
        if (!scored.ok()) return scored.status();
        if (epoch == 0 && !options_.recompute_old_logprobs && m == 0) {
          add_mismatch(*scored, mb_begin);  // before any step: still on-policy
        }
        std::vector<const std::vector<float>*> old_rows;
        std::vector<float> advantages;
        for (size_t i = mb_begin; i < mb_end; ++i) {
          old_rows.push_back(&old_logprobs[i]);
          advantages.push_back(samples[i].advantage);
        }
        const at::Tensor old =
            PadRows(old_rows, scored->logprobs.size(1)).to(device);
        OffPolicyWeights correction;
        if (options_.off_policy.active()) {
          std::vector<const std::vector<float>*> rollout_rows;
          for (size_t i = mb_begin; i < mb_end; ++i)
            rollout_rows.push_back(&samples[i].rollout_logprobs);
          correction = OffPolicyCorrection(
              old, PadRows(rollout_rows, scored->logprobs.size(1)).to(device),
              scored->mask, options_.off_policy);
        }
        at::Tensor reference;
        if (options_.loss.kl_coef != 0) {
          absl::StatusOr<TokenTensors> ref =
              Score(part, nullptr, /*with_grad=*/false);
          if (!ref.ok()) return ref.status();
          reference = ref->logprobs;
        }
        const GrpoLossResult result = GrpoLoss(
            scored->logprobs, old, reference, scored->entropy,
            model::HostToDevice(advantages, at::kFloat, device), scored->mask,
            options_.loss, normalizer, correction.weights);
        result.loss.backward();
        // The micro-batch's figures stay on the device, summed over the
        // mini-batch and read back once per optimizer step (no host sync per
        // micro-batch).
        const at::Tensor tokens = scored->mask.sum().to(at::kDouble);
        const at::Tensor zero = at::zeros({}, tokens.options());
        const at::Tensor figures = at::stack(
            {result.loss.detach().to(at::kDouble), tokens,
             result.policy.loss.detach().to(at::kDouble),
             result.kl.defined() ? result.kl.detach().to(at::kDouble) : zero,
             (scored->entropy.detach() * scored->mask).sum().to(at::kDouble),
             result.policy.clip_high_fraction.to(at::kDouble) * tokens,
             result.policy.clip_low_fraction.to(at::kDouble) * tokens,
             result.policy.dual_clip_fraction.to(at::kDouble) * tokens,
             result.policy.approx_kl.to(at::kDouble) * tokens,
             correction.weights.defined()
                 ? (correction.weights * scored->mask).sum().to(at::kDouble)
                 : tokens,
             correction.weights.defined()
                 ? correction.truncated.sum().to(at::kDouble)
                 : zero,
             correction.weights.defined()
                 ? correction.masked.sum().to(at::kDouble)
                 : zero});
        sums = sums.defined() ? sums + figures : figures;
        ++stats.micro_batches;
      }
      if (comm != nullptr) {
        // Every rank's figures, and the gradients summed: each rank then
        // clips and steps on the whole mini-batch's gradient.
        if (!sums.defined()) {
          sums = at::zeros(
              {12}, at::TensorOptions().dtype(at::kDouble).device(device));
        }
        std::vector<at::Tensor> grads = {sums};
        for (at::Tensor p : parameters) {  // a handle: its grad is shared
          if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
          grads.push_back(p.grad());
        }
        if (absl::Status s = comm->AllReduce(grads); !s.ok()) return s;
      }
      if (sums.defined()) {
        const at::Tensor host = sums.cpu();
        const double* f = host.data_ptr<double>();
        stats.loss += f[0];
        weight_sum += f[1];
        stats.policy_loss += f[2];
        stats.kl += f[3];
        stats.entropy += f[4];
        stats.clip_high_fraction += f[5];
        stats.clip_low_fraction += f[6];
        stats.dual_clip_fraction += f[7];
        stats.approx_kl += f[8];
        stats.is_weight_mean += f[9];
        stats.is_truncated_fraction += f[10];
        stats.is_masked_fraction += f[11];
      }
      const double norm = ClipGradNorm(parameters, options_.max_grad_norm);
      stats.lr = LearningRate(options_.schedule, step);
      if (std::isfinite(norm)) {
        stats.grad_norm += norm;
        optimizer_.Step(stats.lr);
      } else {
        ++stats.skipped_steps;  // a NaN/inf gradient would poison the weights
      }
      optimizer_.ZeroGrad();
      ++step;
      ++stats.optimizer_steps;
    }
  }
  if (comm != nullptr) {
    // On the communicator's device (NCCL reduces only CUDA tensors).
    const at::Tensor totals = at::tensor({static_cast<double>(stats.tokens),
                                          mismatch_sum, mismatch_tokens},
                                         at::kDouble)
                                  .to(device);
    const at::Tensor largest =
        at::tensor({stats.logprob_mismatch_max}, at::kDouble).to(device);
    if (absl::Status s = comm->AllReduce({totals}); !s.ok()) return s;
    if (absl::Status s =
            comm->AllReduce({largest}, distributed::ReduceOp::kMax);
        !s.ok()) {
      return s;
    }
    const at::Tensor host = totals.cpu();
    stats.tokens = static_cast<int64_t>(host[0].item<double>());
    mismatch_sum = host[1].item<double>();
    mismatch_tokens = host[2].item<double>();
    stats.logprob_mismatch_max = largest.cpu()[0].item<double>();
  }
  const double steps =
      static_cast<double>(std::max<int64_t>(1, stats.optimizer_steps));
  stats.loss /= steps;
  stats.policy_loss /= steps;
  stats.kl /= steps;
  stats.grad_norm /= steps;
  const double w = std::max(weight_sum, 1.0);
  stats.entropy /= w;
  stats.clip_high_fraction /= w;
  stats.clip_low_fraction /= w;
  stats.dual_clip_fraction /= w;
  stats.approx_kl /= w;
  stats.is_weight_mean = weight_sum > 0 ? stats.is_weight_mean / w : 1;
  stats.is_truncated_fraction /= w;
  stats.is_masked_fraction /= w;
  stats.logprob_mismatch_mean =
      mismatch_tokens > 0 ? mismatch_sum / mismatch_tokens : 0;
  return stats;
}

}  // namespace microrl::learner
