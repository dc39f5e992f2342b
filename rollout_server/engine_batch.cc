// The engine's batch: admission of waiting completions into KV slots, batched
// prefill, and decode windows with their one host sync.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"
#include "common/device/device.h"
#include "common/model/tensor_io.h"
#include "rollout_server/decode_graphs.h"
#include "rollout_server/engine.h"
#include "rollout_server/engine_internal.h"
#include "rollout_server/sampler.h"

namespace microrl::rollout {

using engine_internal::Seconds;
using engine_internal::SequenceSeed;

void Engine::Admit() {
  if (sleeping_) return;
  // While a control waits, only a partly admitted request goes on (so that all
  // its completions see the same adapter, and Sleep lets it finish).
  const bool only_started = !controls_.empty();
  std::vector<Chunk> chunks;
  int64_t free = num_slots_ - static_cast<int64_t>(running_.size()) -
                 prompt_slots_.count();
  int64_t rows = 0;
  int64_t longest = 0;
  // The adapter version of the batch: every running sequence uses the same.
  std::optional<uint64_t> mode;
  if (!running_.empty()) mode = running_version_;
  while (!waiting_.empty() && free > 0) {
    std::shared_ptr<Request> request = waiting_.front();
    if (request->finished) {
      waiting_.pop_front();
      continue;
    }
    if (only_started && !request->started.has_value()) break;
    const uint64_t version = VersionFor(*request);
    if (mode.has_value() && *mode != version) break;
    const int remaining = request->spec.group_size - request->next_sample;
    // A whole group shares a prefill; a group larger than the cache goes in
    // parts.
    const int64_t count = std::min<int64_t>(remaining, num_slots_);
    if (free < count) break;
    const int64_t length = static_cast<int64_t>(
        request->spec.prompts[request->next_prompt].size());
    if (!chunks.empty() &&
        (rows + 1) * std::max(longest, length) > options_.prefill_tokens)
      break;
    // Where the prompt's KV goes: a prompt slot with room, a new one if a slot
    // is free beyond the group's, else each completion's slot.
    std::optional<PromptSlots::Place> place;
    if (share_prompts_ && count >= 2) {
      place = prompt_slots_.Reserve(length, cache_->capacity(), count, &free);
    }
    chunks.push_back({request, request->next_prompt, request->next_sample,
                      static_cast<int>(count), version,
                      place.has_value() ? place->index : -1,
                      place.has_value() ? place->offset : 0});
    if (!request->version.has_value()) {
      request->version = version;
      request->adapter = version == 0 ? nullptr : adapter_;
    }
    if (!mode.has_value()) {
      running_adapter_ = request->adapter;
      running_version_ = version;
    }
    mode = version;
    if (!request->started.has_value()) request->started = absl::Now();
    free -= count;
    ++rows;
    longest = std::max(longest, length);
    request->next_sample += static_cast<int>(count);
    if (request->next_sample == request->spec.group_size) {
      request->next_sample = 0;
      if (++request->next_prompt ==
          static_cast<int>(request->spec.prompts.size())) {
        waiting_.pop_front();
      }
    }
  }
  if (!chunks.empty()) Prefill(chunks);
}

void Engine::Prefill(const std::vector<Chunk>& chunks) {
  const absl::Time start = absl::Now();
  const size_t first = running_.size();
  const int64_t rows = static_cast<int64_t>(chunks.size());
  int64_t longest = 0;
  for (const Chunk& chunk : chunks) {
    longest = std::max<int64_t>(
        longest, chunk.request->spec.prompts[chunk.prompt].size());
  }
  std::vector<int64_t> ids(rows * longest, 0);
  std::vector<int64_t> leaders(rows);
  std::vector<int64_t> lengths(rows);
  std::vector<int64_t> slots(rows);  // where each prompt's KV goes
  std::vector<int64_t> offsets(rows);
  std::vector<int64_t> row_of_sequence;
  for (int64_t r = 0; r < rows; ++r) {
    const Chunk& chunk = chunks[r];
    const std::vector<int32_t>& prompt =
        chunk.request->spec.prompts[chunk.prompt];
    std::copy(prompt.begin(), prompt.end(), ids.begin() + r * longest);
    lengths[r] = static_cast<int64_t>(prompt.size());
    leaders[r] = static_cast<int64_t>(running_.size());
    const bool shared = chunk.prompt_slot >= 0;
    slots[r] = shared ? prompt_slots_.KvSlot(chunk.prompt_slot) : leaders[r];
    offsets[r] = shared ? chunk.offset : 0;
    if (shared) prompt_slots_.AddReaders(chunk.prompt_slot, chunk.count);
    if (chunk.count >= 2) {
      ++(shared ? shared_prompts_ : copied_prompts_);
      metrics_.GroupPrompt(shared);
    }
    for (int i = 0; i < chunk.count; ++i) {
      cache_->set_length(static_cast<int64_t>(running_.size()),
                         0);  // a fresh slot
      auto sequence = std::make_unique<Sequence>();
      sequence->request = chunk.request;
      sequence->prompt = chunk.prompt;
      sequence->sample = chunk.first + i;
      sequence->max_tokens = chunk.request->max_tokens[chunk.prompt];
      sequence->seed = SequenceSeed(
          chunk.request->seed,
          chunk.request->spec.sampling.first_prompt_index + chunk.prompt,
          sequence->sample);
      sequence->out =
          &chunk.request->result.groups[chunk.prompt][sequence->sample];
      sequence->version = chunk.version;
      sequence->prompt_slot = chunk.prompt_slot;
      sequence->prompt_offset = chunk.offset;
      sequence->prompt_length = lengths[r];
      sequence->out->adapter_version = chunk.version;
      if (tokenizer_ != nullptr) {
        sequence->detokenizer = std::make_unique<tokenizer::IncrementalDecoder>(
            *tokenizer_, /*skip_special_tokens=*/true);
      }
      running_.push_back(std::move(sequence));
      row_of_sequence.push_back(r);
    }
    metrics_.PromptTokens(lengths[r]);
  }
  model::RunOptions run;
  run.adapter = chunks.front().request->adapter.get();
  absl::StatusOr<at::Tensor> hidden = decoder_->PrefillAt(
      model::HostToDevice(ids, at::kLong, decoder_->options().device)
          .view({rows, longest}),
      slots, offsets, lengths, *cache_, run);
  absl::Status status = hidden.status();
  if (status.ok()) {
    try {
      const at::Device device = decoder_->options().device;
      const at::Tensor last_positions =
          model::HostToDevice(lengths, at::kLong, device) - 1;
      const at::Tensor last = hidden->index(
          {at::arange(rows,
                      at::TensorOptions().dtype(at::kLong).device(device)),
           last_positions});  // [rows, H]
      const at::Tensor logits = decoder_->Logits(last).index_select(
          0, model::HostToDevice(row_of_sequence, at::kLong, device));
      for (int64_t r = 0; r < rows; ++r) {
        if (chunks[r].prompt_slot >= 0) continue;  // read from its slot
        for (int i = 1; i < chunks[r].count; ++i) {
          cache_->CopyPrefix(leaders[r], leaders[r] + i, lengths[r]);
        }
      }
      SampleAndAppend(logits, first);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("prefill failed: ", e.what()));
    }
  }
  if (!status.ok()) {
    MRL_LOG(ERROR) << "prefill of " << rows << " prompts failed: " << status;
    for (size_t i = first; i < running_.size(); ++i)
      FailRequest(*running_[i]->request, status);
  }
  Compact();
  metrics_.Prefilled(Seconds(absl::Now() - start));
}

void Engine::DecodeStep() {
  const absl::Time start = absl::Now();
  const int64_t n = static_cast<int64_t>(running_.size());
  const at::Device device = decoder_->options().device;
  int64_t window = options_.decode_steps_per_sync > 0
                       ? options_.decode_steps_per_sync
                       : (device.is_cuda() ? 8 : 1);
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) {
    const Sequence& sequence = *running_[i];
    ids[i] = sequence.last_token;
    // No sequence goes past its max_tokens (nor, so, its slot).
    window = std::min<int64_t>(
        window, sequence.max_tokens -
                    static_cast<int64_t>(sequence.out->token_ids.size()));
  }
  // Each step adds a position to every slot: none may pass the capacity.
  const int64_t capacity = cache_->capacity();
  std::vector<int64_t> starts(n);
  int64_t longest = 0;
  for (int64_t i = 0; i < n; ++i) {
    starts[i] = cache_->length(i);
    longest = std::max(longest, starts[i]);
  }
  window = std::max<int64_t>(std::min(window, capacity - longest), 1);
  const int64_t bucket = options_.decode_key_bucket > 0
                             ? options_.decode_key_bucket
                         : graphs_ != nullptr ? 256
                                              : 1;
  model::RunOptions run;
  run.adapter = RunningAdapter();
  if (graphs_ != nullptr && run.adapter != nullptr &&
      graphs_version_ != running_version_) {
    // The graphs run their own copy of the adapter: this batch's weights go
    // into it (no graph of another version runs now).
    graphs_->SetAdapter(*run.adapter);
    graphs_version_ = running_version_;
  }
  absl::Status status;
  std::vector<at::Tensor> tokens;
  std::vector<at::Tensor> logprobs;
  std::vector<at::Tensor> top_ids;  // with top log-probs asked for
  std::vector<at::Tensor> top_values;
  try {
    at::Tensor input = model::HostToDevice(ids, at::kLong, device).view({n, 1});
    at::Tensor positions = model::HostToDevice(starts, at::kLong, device);
    // Prompts read from prompt slots, fixed for the window.
    at::Tensor rotary_offsets;
    const std::optional<model::SharedPrompts> shared =
        SharedPromptView(bucket, &rotary_offsets);
    for (int64_t step = 0; step < window; ++step) {
      if (longest + step + 1 > capacity) {
        status = absl::ResourceExhaustedError(absl::StrCat(
            "a sequence would pass the KV capacity of ", capacity, " tokens"));
        break;
      }
      const int64_t key_length = std::min<int64_t>(
          capacity, (longest + step + 1 + bucket - 1) / bucket * bucket);
      const at::Tensor hidden =
          graphs_ != nullptr
              ? graphs_->Run(input, positions, key_length, *cache_, run)
              : decoder_->DecodeOnDevice(
                    input, positions, 0, key_length, *cache_, run,
                    rotary_offsets, shared.has_value() ? &*shared : nullptr);
      const SampleResult sampled = Sample(decoder_->Logits(hidden.select(1, 0)),
                                          SamplingRows(0, n, step));
      tokens.push_back(sampled.tokens);
      logprobs.push_back(sampled.logprobs);
      if (sampled.top_ids.defined()) {
        top_ids.push_back(sampled.top_ids);
        top_values.push_back(sampled.top_logprobs);
      }
      input = sampled.tokens.view({n, 1});
      positions = positions + 1;
    }
    // The cache now holds the window's positions of every row (those of a
    // sequence that stopped inside it go with the sequence).
    for (int64_t i = 0; i < n; ++i) {
      cache_->set_length(i, starts[i] + static_cast<int64_t>(tokens.size()));
    }
    if (status.ok()) {
      // The one device-to-host copy of the window: tokens [steps, n], their
      // log-probs [steps, n], and any top log-probs [steps, n, k] (ids, then
      // values).
      const int64_t steps = static_cast<int64_t>(tokens.size());
      const int64_t k = top_ids.empty() ? 0 : top_ids[0].size(1);
      std::vector<at::Tensor> parts = {
          at::stack(tokens).to(at::kDouble).flatten(),
          at::stack(logprobs).to(at::kDouble).flatten()};
      if (k > 0) {
        parts.push_back(at::stack(top_ids).to(at::kDouble).flatten());
        parts.push_back(at::stack(top_values).to(at::kDouble).flatten());
      }
      const at::Tensor host = at::cat(parts).cpu();
      const double* values = host.data_ptr<double>();
      const double* ids_at = values + 2 * steps * n;
      const double* values_at = ids_at + steps * n * k;
      int64_t appended = 0;
      for (int64_t step = 0; step < steps; ++step) {
        for (int64_t i = 0; i < n; ++i) {
          Sequence& sequence = *running_[i];
          if (sequence.finished || sequence.request->finished) continue;
          const int64_t row = step * n + i;
          Append(sequence, static_cast<int32_t>(values[row]),
                 static_cast<float>(values[(steps + step) * n + i]),
                 {k > 0 ? ids_at + row * k : nullptr,
                  k > 0 ? values_at + row * k : nullptr, k});
          ++appended;
        }
      }
      CountGenerated(appended);
      metrics_.DecodeStep(Seconds(absl::Now() - start) /
                          static_cast<double>(steps));
    }
  } catch (const std::exception& e) {
    status =
        absl::InternalError(absl::StrCat("decode step failed: ", e.what()));
  }
  if (!status.ok()) {
    MRL_LOG(ERROR) << "decode step of " << n << " sequences failed: " << status;
    for (auto& sequence : running_) FailRequest(*sequence->request, status);
  }
  Compact();
}

std::vector<RowSampling> Engine::SamplingRows(size_t first, int64_t n,
                                              int64_t ahead) const {
  std::vector<RowSampling> rows(n);
  for (int64_t i = 0; i < n; ++i) {
    const Sequence& sequence = *running_[first + i];
    const SamplingConfig& s = sequence.request->spec.sampling;
    rows[i].temperature = s.temperature;
    rows[i].top_p = s.top_p;
    rows[i].top_k = s.top_k;
    rows[i].seed = sequence.seed;
    rows[i].top_logprobs = s.top_logprobs;
    rows[i].position =
        static_cast<int64_t>(sequence.out->token_ids.size()) + ahead;
  }
  return rows;
}

void Engine::CountGenerated(int64_t tokens) {
  metrics_.Generated(tokens);
  generated_total_ += static_cast<uint64_t>(tokens);
}

void Engine::SampleAndAppend(const at::Tensor& logits, size_t first) {
  const int64_t n = logits.size(0);
  const SampleResult sampled = Sample(logits, SamplingRows(first, n, 0));
  // The one device-to-host copy of the step: tokens, log-probs and any top
  // log-probs together.
  const int64_t k = sampled.top_ids.defined() ? sampled.top_ids.size(1) : 0;
  std::vector<at::Tensor> parts = {sampled.tokens.to(at::kDouble),
                                   sampled.logprobs.to(at::kDouble)};
  if (k > 0) {
    parts.push_back(sampled.top_ids.to(at::kDouble).flatten());
    parts.push_back(sampled.top_logprobs.to(at::kDouble).flatten());
  }
  const at::Tensor host = at::cat(parts).cpu();
  const double* values = host.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    Sequence& sequence = *running_[first + i];
    if (sequence.finished) continue;
    Append(sequence, static_cast<int32_t>(values[i]),
           static_cast<float>(values[n + i]),
           {k > 0 ? values + 2 * n + i * k : nullptr,
            k > 0 ? values + 2 * n + n * k + i * k : nullptr, k});
  }
  CountGenerated(n);
}

}  // namespace microrl::rollout
