#include "learner/policy_update.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/distributed/communicator.h"
#include "common/model/packing.h"
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

// The samples of `which`, in that order.
std::vector<const Sample*> Pointers(const std::vector<Sample>& samples,
                                    const std::vector<size_t>& which) {
  std::vector<const Sample*> out;
  out.reserve(which.size());
  for (size_t i : which) out.push_back(&samples[i]);
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

std::vector<std::vector<size_t>> PolicyUpdater::MicroBatches(
    const std::vector<Sample>& samples, size_t begin, size_t end) const {
  const int64_t budget = options_.micro_batch_tokens;
  std::vector<std::vector<size_t>> out;
  if (!options_.packing) {
    // Consecutive runs whose padded size (count x longest) stays within the
    // budget (a single longer sample runs alone).
    int64_t longest = 0;
    for (size_t i = begin; i < end; ++i) {
      const int64_t length = static_cast<int64_t>(samples[i].prompt.size() +
                                                  samples[i].completion.size());
      const int64_t count =
          static_cast<int64_t>(out.empty() ? 0 : out.back().size()) + 1;
      if (out.empty() || count * std::max(longest, length) > budget) {
        out.emplace_back();
        longest = 0;
      }
      out.back().push_back(i);
      longest = std::max(longest, length);
    }
    return out;
  }
  // Packed: samples by prompt (in order of first appearance), longest
  // completion first within each, filling each micro-batch up to the budget
  // of packed tokens (a shared prompt counts once per micro-batch; a sample's
  // last token is not run, it predicts nothing).
  std::map<std::vector<int32_t>, size_t> group_of;
  std::vector<std::vector<size_t>> groups;
  for (size_t i = begin; i < end; ++i) {
    const auto [it, added] =
        group_of.try_emplace(samples[i].prompt, groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  int64_t used = 0;
  std::set<size_t> prompts_in;  // groups whose prompt the micro-batch holds
  for (size_t g = 0; g < groups.size(); ++g) {
    std::vector<size_t>& group = groups[g];
    std::stable_sort(group.begin(), group.end(), [&](size_t a, size_t b) {
      return samples[a].completion.size() > samples[b].completion.size();
    });
    for (size_t i : group) {
      const int64_t prompt = static_cast<int64_t>(samples[i].prompt.size());
      const int64_t own =
          static_cast<int64_t>(samples[i].completion.size()) - 1;
      auto cost = [&] {
        return own +
               (!options_.share_prompts || !prompts_in.count(g) ? prompt : 0);
      };
      if (out.empty() || used + cost() > budget) {
        out.emplace_back();
        used = 0;
        prompts_in.clear();
      }
      used += cost();
      prompts_in.insert(g);
      out.back().push_back(i);
    }
  }
  return out;
}

absl::StatusOr<PolicyUpdater::Prediction> PolicyUpdater::ForwardPadded(
    const std::vector<const Sample*>& samples,
    const model::RunOptions& run) const {
  const int64_t batch = static_cast<int64_t>(samples.size());
  int64_t longest = 0;
  for (const Sample* s : samples) {
    longest =
        std::max<int64_t>(longest, s->prompt.size() + s->completion.size());
  }
  Prediction out;
  std::vector<int64_t> ids(batch * longest, 0);
  for (int64_t b = 0; b < batch; ++b) {
    const Sample& s = *samples[b];
    std::copy(s.prompt.begin(), s.prompt.end(), ids.begin() + b * longest);
    std::copy(s.completion.begin(), s.completion.end(),
              ids.begin() + b * longest + s.prompt.size());
    const int64_t p = static_cast<int64_t>(s.prompt.size());
    for (int64_t t = 0; t < static_cast<int64_t>(s.completion.size()); ++t) {
      out.rows.push_back(b * longest + p - 1 + t);
      out.targets.push_back(s.completion[t]);
      out.row_b.push_back(b);
      out.row_t.push_back(t);
    }
  }
  absl::StatusOr<at::Tensor> hidden = decoder_.Forward(
      model::HostToDevice(ids, at::kLong, decoder_.options().device)
          .view({batch, longest}),
      run);
  if (!hidden.ok()) return hidden.status();
  out.hidden = hidden->reshape({batch * longest, -1});
  return out;
}

absl::StatusOr<PolicyUpdater::Prediction> PolicyUpdater::ForwardPacked(
    const std::vector<const Sample*>& samples,
    const model::RunOptions& run) const {
  // One row: each sample's tokens but its last (which predicts nothing), or,
  // sharing prompts, each distinct prompt once and then each sample's
  // completion but its last token, reading its prompt as a prefix.
  Prediction out;
  std::vector<int64_t> ids;
  std::vector<model::PackedSegment> segments;
  std::map<std::vector<int32_t>, int64_t> prompt_begin;
  auto append = [&](auto first, auto last) {
    const int64_t begin = static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), first, last);
    return begin;
  };
  for (int64_t b = 0; b < static_cast<int64_t>(samples.size()); ++b) {
    const Sample& s = *samples[b];
    const int64_t p = static_cast<int64_t>(s.prompt.size());
    const int64_t length = static_cast<int64_t>(s.completion.size());
    int64_t first_row;  // the row predicting completion[0]
    int64_t own_begin;  // the row of completion[0] (if it runs)
    if (options_.share_prompts) {
      auto [it, added] = prompt_begin.try_emplace(s.prompt, 0);
      if (added) {
        it->second = append(s.prompt.begin(), s.prompt.end());
        segments.push_back({it->second, p, 0, 0});
      }
      first_row = it->second + p - 1;
      own_begin = append(s.completion.begin(), s.completion.end() - 1);
      if (length > 1)
        segments.push_back({own_begin, length - 1, it->second, p});
    } else {
      const int64_t begin = append(s.prompt.begin(), s.prompt.end());
      append(s.completion.begin(), s.completion.end() - 1);
      segments.push_back({begin, p + length - 1, 0, 0});
      first_row = begin + p - 1;
      own_begin = begin + p;
    }
    for (int64_t t = 0; t < length; ++t) {
      out.rows.push_back(t == 0 ? first_row : own_begin + t - 1);
      out.targets.push_back(s.completion[t]);
      out.row_b.push_back(b);
      out.row_t.push_back(t);
    }
  }
  const at::Device device = decoder_.options().device;
  absl::StatusOr<model::PackedLayout> layout = model::MakePackedLayout(
      segments, static_cast<int64_t>(ids.size()), device);
  if (!layout.ok()) return layout.status();
  absl::StatusOr<at::Tensor> hidden = decoder_.ForwardPacked(
      model::HostToDevice(ids, at::kLong, device), *layout, run);
  if (!hidden.ok()) return hidden.status();
  out.hidden = *std::move(hidden);
  return out;
}

absl::StatusOr<PolicyUpdater::TokenTensors> PolicyUpdater::Score(
    absl::Span<const Sample> samples, const model::LoraAdapter* adapter,
    bool with_grad) const {
  std::vector<const Sample*> pointers;
  for (const Sample& s : samples) pointers.push_back(&s);
  return ScoreSamples(pointers, adapter, with_grad);
}

absl::StatusOr<PolicyUpdater::TokenTensors> PolicyUpdater::ScoreSamples(
    const std::vector<const Sample*>& samples,
    const model::LoraAdapter* adapter, bool with_grad) const {
  const int64_t batch = static_cast<int64_t>(samples.size());
  int64_t width = 0;
  for (int64_t b = 0; b < batch; ++b) {
    if (samples[b]->prompt.empty() || samples[b]->completion.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sample ", b, " has an empty prompt or completion"));
    }
    width = std::max<int64_t>(width, samples[b]->completion.size());
  }
  const at::Device device = decoder_.options().device;
  at::AutoGradMode grad_mode(with_grad);
  model::RunOptions run;
  run.adapter = adapter;
  run.gradient_checkpointing = with_grad && options_.gradient_checkpointing;
  absl::StatusOr<Prediction> predicted = options_.packing
                                             ? ForwardPacked(samples, run)
                                             : ForwardPadded(samples, run);
  if (!predicted.ok()) return predicted.status();
  const at::Tensor rows = predicted->hidden.index_select(
      0, model::HostToDevice(predicted->rows, at::kLong, device));
  absl::StatusOr<model::TokenStats> stats = model::ComputeTokenStats(
      rows, decoder_.lm_head(),
      model::HostToDevice(predicted->targets, at::kLong, device),
      options_.temperature,
      model::ChunkRowsForBudget(decoder_.config().vocab_size),
      /*entropy_grad=*/options_.loss.entropy_coef != 0);
  if (!stats.ok()) return stats.status();
  const auto float_options =
      at::TensorOptions().dtype(at::kFloat).device(device);
  const at::Tensor b_index =
      model::HostToDevice(predicted->row_b, at::kLong, device);
  const at::Tensor t_index =
      model::HostToDevice(predicted->row_t, at::kLong, device);
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
  auto add_mismatch = [&](const TokenTensors& scored,
                          const std::vector<size_t>& which) {
    const at::Tensor rollout = [&] {
      std::vector<const std::vector<float>*> rows;
      for (size_t i : which) rows.push_back(&samples[i].rollout_logprobs);
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
    for (const std::vector<size_t>& which : MicroBatches(samples, 0, n)) {
      if (stop_now()) return stopped;
      absl::StatusOr<TokenTensors> scored =
          ScoreSamples(Pointers(samples, which), &adapter_,
                       /*with_grad=*/false);
      if (!scored.ok()) return scored.status();
      add_mismatch(*scored, which);
      const at::Tensor host = scored->logprobs.cpu();
      for (size_t b = 0; b < which.size(); ++b) {
        const float* row = host[b].data_ptr<float>();
        old_logprobs[which[b]].assign(
            row, row + samples[which[b]].completion.size());
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
      for (const std::vector<size_t>& which :
           MicroBatches(samples, begin, end)) {
        if (stop_now()) return stopped;
        const std::vector<const Sample*> part = Pointers(samples, which);
        absl::StatusOr<TokenTensors> scored =
            ScoreSamples(part, &adapter_, /*with_grad=*/true);
        if (!scored.ok()) return scored.status();
        if (epoch == 0 && !options_.recompute_old_logprobs && m == 0) {
          add_mismatch(*scored, which);  // before any step: still on-policy
        }
        std::vector<const std::vector<float>*> old_rows;
        std::vector<float> advantages;
        for (size_t i : which) {
          old_rows.push_back(&old_logprobs[i]);
          advantages.push_back(samples[i].advantage);
        }
        const at::Tensor old =
            PadRows(old_rows, scored->logprobs.size(1)).to(device);
        OffPolicyWeights correction;
        if (options_.off_policy.active()) {
          std::vector<const std::vector<float>*> rollout_rows;
          for (size_t i : which) {
            rollout_rows.push_back(&samples[i].rollout_logprobs);
          }
          correction = OffPolicyCorrection(
              old, PadRows(rollout_rows, scored->logprobs.size(1)).to(device),
              scored->mask, options_.off_policy);
        }
        at::Tensor reference;
        if (options_.loss.kl_coef != 0) {
          absl::StatusOr<TokenTensors> ref =
              ScoreSamples(part, nullptr, /*with_grad=*/false);
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
