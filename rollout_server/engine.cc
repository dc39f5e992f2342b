#include "rollout_server/engine.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/base/enum_names.h"
#include "common/base/logging.h"
#include "common/device/device.h"
#include "common/model/tensor_io.h"
#include "rollout_server/decode_graphs.h"
#include "rollout_server/engine_internal.h"
#include "rollout_server/request_validation.h"
#include "rollout_server/sampler.h"
#include "rollout_server/stop_criteria.h"

namespace microrl::rollout {

using engine_internal::ReserveCache;
using engine_internal::Seconds;
using engine_internal::ToDevice;

namespace {

// The names of engine metrics' `reason` label.
constexpr EnumName<FinishReason> kFinishReasonNames[] = {
    {FinishReason::kStop, "stop"},
    {FinishReason::kLength, "length"},
    {FinishReason::kAbort, "abort"}};

int64_t SlotBytes(const model::ModelConfig& config, at::ScalarType dtype,
                  int64_t max_model_len) {
  // Keys and values of every layer for max_model_len positions.
  return 2 * config.num_layers * config.num_kv_heads * config.head_dim *
         static_cast<int64_t>(c10::elementSize(dtype)) * max_model_len;
}

}  // namespace

absl::StatusOr<model::KvCache> engine_internal::ReserveCache(
    const model::Decoder& decoder, int64_t num_slots, int64_t max_model_len) {
  c10::InferenceMode inference;
  model::KvCacheOptions options;
  options.num_slots = num_slots;
  options.capacity = max_model_len;
  options.device = decoder.options().device;
  options.dtype = decoder.options().dtype;
  try {
    return model::KvCache::Create(decoder.config(), options);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("could not reserve the KV cache: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    std::shared_ptr<const model::Decoder> decoder,
    std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
    const EngineOptions& options, prometheus::Registry& registry) {
  if (decoder == nullptr) return absl::InvalidArgumentError("no model");
  const model::ModelConfig& config = decoder->config();
  if (options.max_model_len < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_model_len must be at least 2, not ", options.max_model_len));
  }
  if (options.default_max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the default max_tokens must be at least 1, not ",
                     options.default_max_tokens));
  }
  if (options.max_group_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_group_size must be at least 1, not ", options.max_group_size));
  }
  if (options.prefill_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill_tokens must be at least 1, not ", options.prefill_tokens));
  }
  for (int64_t id : options.eos_token_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("EOS token id ", id, " is outside the vocabulary [0, ",
                       config.vocab_size, ")"));
    }
  }
  const int64_t slot_bytes =
      SlotBytes(config, decoder->options().dtype, options.max_model_len);
  const int64_t num_slots = options.kv_cache_bytes / slot_bytes;
  if (num_slots < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a KV cache of ", options.kv_cache_bytes,
        " bytes holds no sequence: one of ", options.max_model_len,
        " tokens (max_model_len) needs ", slot_bytes,
        " bytes; raise the KV-cache budget or lower max_model_len"));
  }
  if (options.cuda_graphs && !decoder->options().device.is_cuda()) {
    return absl::InvalidArgumentError("CUDA graphs need the model on a GPU");
  }
  if (options.decode_key_bucket < 0) {
    return absl::InvalidArgumentError("decode_key_bucket must be >= 0");
  }
  absl::StatusOr<model::KvCache> cache =
      ReserveCache(*decoder, num_slots, options.max_model_len);
  if (!cache.ok()) return cache.status();
  return std::unique_ptr<Engine>(
      new Engine(std::move(decoder), std::move(tokenizer), options, num_slots,
                 *std::move(cache), registry));
}

Engine::Engine(std::shared_ptr<const model::Decoder> decoder,
               std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
               const EngineOptions& options, int64_t num_slots,
               model::KvCache cache, prometheus::Registry& registry)
    : decoder_(std::move(decoder)),
      tokenizer_(std::move(tokenizer)),
      options_(options),
      num_slots_(num_slots),
      slot_bytes_(SlotBytes(decoder_->config(), decoder_->options().dtype,
                            options.max_model_len)),
      cache_(std::move(cache)),
      prompt_slots_(num_slots),
      metrics_(registry) {
  snapshot_.kv_cache_bytes = cache_->bytes();
  snapshot_.kv_cache_budget_bytes = num_slots_ * slot_bytes_;
  snapshot_.num_slots = num_slots_;
  metrics_.Asleep(false, cache_->bytes());
  if (options_.cuda_graphs) {
    graphs_ = std::make_unique<DecodeGraphs>(*decoder_, num_slots_);
  }
  share_prompts_ = options_.share_prompt_kv && graphs_ == nullptr;
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status Engine::Validate(const GenerationRequest& request) const {
  RequestLimits limits;
  limits.vocab_size = decoder_->config().vocab_size;
  limits.max_model_len = options_.max_model_len;
  limits.max_group_size = options_.max_group_size;
  limits.has_tokenizer = tokenizer_ != nullptr;
  return ValidateRequest(request, limits);
}

void Engine::Submit(
    GenerationRequest request,
    std::function<void(absl::StatusOr<GenerationResult>)> done) {
  if (absl::Status status = Validate(request); !status.ok()) {
    done(status);
    return;
  }
  const int64_t completions = static_cast<int64_t>(request.prompts.size()) *
                              std::max<int64_t>(1, request.group_size);
  auto r = std::make_shared<Request>();
  r->spec = std::move(request);
  r->submitted = absl::Now();
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refused = absl::UnavailableError("the rollout engine is shutting down");
    } else if (queued_requests_ >= options_.max_queued_requests ||
               queued_completions_ + completions >
                   options_.max_queued_completions) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "the rollout server's queue is full (", queued_requests_,
          " requests, ", queued_completions_,
          " completions queued; this one has ", completions,
          "; limits --max_queued_requests=", options_.max_queued_requests,
          ", --max_queued_completions=", options_.max_queued_completions,
          "): retry later"));
    } else {
      ++queued_requests_;
      queued_completions_ += completions;
      // The counts go down when the request is done, however it ends.
      r->done = [this, completions, done = std::move(done)](
                    absl::StatusOr<GenerationResult> result) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          --queued_requests_;
          queued_completions_ -= completions;
        }
        done(std::move(result));
      };
      incoming_.push_back(r);
    }
  }
  if (!refused.ok()) {
    done(refused);
    return;
  }
  wake_.notify_all();
}

EngineSnapshot Engine::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

// ------------------------------------------------------------------ engine
// thread

void Engine::Loop() {
  c10::InferenceMode inference;
  while (true) {
    std::deque<std::shared_ptr<Request>> incoming;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const bool busy = !running_.empty() || !controls_.empty() ||
                        (!waiting_.empty() && !sleeping_);
      if (!busy && incoming_.empty() && incoming_controls_.empty() &&
          !stopping_) {
        // Wakes for new work, or after a while to drop cancelled waiting
        // requests.
        wake_.wait_for(lock, std::chrono::milliseconds(50));
      }
      if (stopping_) break;
      incoming.swap(incoming_);
      while (!incoming_controls_.empty()) {
        controls_.push_back(std::move(incoming_controls_.front()));
        incoming_controls_.pop_front();
      }
    }
    try {
      for (std::shared_ptr<Request>& request : incoming)
        Accept(std::move(request));
      DropCancelled();
      HandleControls();
      Admit();
      if (!running_.empty()) DecodeStep();
      HandleControls();  // a drain may have completed
      Publish();
    } catch (const std::exception& e) {
      // Whatever failed (device error, allocation), the server keeps serving.
      MRL_LOG(ERROR) << "engine step failed: " << e.what();
      FailAll(absl::InternalError(
          absl::StrCat("the rollout engine failed: ", e.what())));
    }
  }
  // Shutting down: everything pending fails.
  const absl::Status stopped =
      absl::UnavailableError("the rollout server is shutting down");
  std::deque<std::shared_ptr<Request>> incoming;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(incoming_);
    while (!incoming_controls_.empty()) {
      controls_.push_back(std::move(incoming_controls_.front()));
      incoming_controls_.pop_front();
    }
  }
  for (auto& request : incoming) request->done(stopped);
  FailAll(stopped);
  for (auto& control : controls_) control->done.set_value(stopped);
  controls_.clear();
}

void Engine::Accept(std::shared_ptr<Request> request) {
  const GenerationRequest& spec = request->spec;
  const bool sleep_pending = std::any_of(
      controls_.begin(), controls_.end(),
      [](const auto& c) { return c->kind == Control::Kind::kSleep; });
  if ((sleeping_ || sleep_pending) && !spec.wait_if_sleeping) {
    request->done(absl::UnavailableError(
        "the rollout server is sleeping (Sleep was called); call Wake, or set "
        "wait_if_sleeping to wait"));
    return;
  }
  if (!spec.disable_adapter && spec.min_adapter_version > adapter_version_) {
    request->done(absl::FailedPreconditionError(absl::StrCat(
        "the loaded adapter is version ", adapter_version_,
        "; the request needs at least ", spec.min_adapter_version)));
    return;
  }
  if (spec.adapter_version != 0) {
    const auto resident = resident_.find(spec.adapter_version);
    if (resident == resident_.end()) {
      std::vector<uint64_t> held;
      for (const auto& [version, adapter] : resident_) held.push_back(version);
      request->done(absl::FailedPreconditionError(absl::StrCat(
          "adapter version ", spec.adapter_version,
          " is not resident (resident: ",
          held.empty() ? "none" : absl::StrJoin(held, ", "), ")")));
      return;
    }
    request->version = spec.adapter_version;
    request->adapter = resident->second;
  }
  const SamplingConfig& s = spec.sampling;
  if (s.seed.has_value()) {
    request->seed = *s.seed;
  } else {
    std::random_device entropy;
    request->seed = (static_cast<uint64_t>(entropy()) << 32) ^ entropy() ^
                    static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  }
  for (const std::vector<int32_t>& prompt : spec.prompts) {
    const int64_t room =
        options_.max_model_len - static_cast<int64_t>(prompt.size());
    request->max_tokens.push_back(
        s.max_tokens > 0 ? s.max_tokens
                         : std::min(options_.default_max_tokens, room));
  }
  std::vector<int32_t> stop_ids = s.stop_token_ids;
  if (!s.ignore_eos) {
    for (int64_t id : options_.eos_token_ids)
      stop_ids.push_back(static_cast<int32_t>(id));
  }
  request->stop = StopCriteria(std::move(stop_ids), s.stop_strings);
  request->result.groups.resize(spec.prompts.size());
  for (auto& group : request->result.groups) group.resize(spec.group_size);
  request->unfinished =
      static_cast<int64_t>(spec.prompts.size()) * spec.group_size;
  waiting_.push_back(std::move(request));
}

void Engine::Append(Sequence& sequence, int32_t token, float logprob,
                    const TopLogprobs& top) {
  AppendToken(sequence, token, logprob, top);
  // A finished sequence has reported in Finish (its completion may be gone).
  const Request& request = *sequence.request;
  if (!sequence.finished && request.spec.on_progress && !request.finished) {
    request.spec.on_progress(sequence.prompt, sequence.sample, *sequence.out,
                             false);
  }
}

void Engine::AppendToken(Sequence& sequence, int32_t token, float logprob,
                         const TopLogprobs& top) {
  Completion& out = *sequence.out;
  const Request& request = *sequence.request;
  out.token_ids.push_back(token);
  out.logprobs.push_back(logprob);
  if (const int want = request.spec.sampling.top_logprobs; want > 0) {
    std::vector<std::pair<int32_t, float>>& alternatives =
        out.top_logprobs.emplace_back();
    const int64_t k = std::min<int64_t>(want, top.k);
    for (int64_t j = 0; j < k; ++j) {
      alternatives.emplace_back(static_cast<int32_t>(top.ids[j]),
                                static_cast<float>(top.values[j]));
    }
  }
  sequence.last_token = token;
  if (request.stop.IsStopToken(token)) {
    Finish(sequence, FinishReason::kStop,
           tokenizer_ != nullptr ? tokenizer_->IdToToken(token)
                                 : absl::StrCat(token));
    return;
  }
  if (sequence.detokenizer != nullptr) {
    const std::string piece = sequence.detokenizer->Add(token);
    if (!piece.empty()) {
      const size_t before = out.text.size();
      out.text += piece;
      if (const std::optional<StopCriteria::Match> match =
              request.stop.FindStopString(out.text, before);
          match.has_value()) {
        const std::string stop = *match->stop;
        out.text.resize(match->position);
        sequence.detokenizer.reset();  // nothing more is added to the text
        Finish(sequence, FinishReason::kStop, stop);
        return;
      }
    }
  }
  if (static_cast<int64_t>(out.token_ids.size()) >= sequence.max_tokens) {
    Finish(sequence, FinishReason::kLength, "");
  }
}

void Engine::Finish(Sequence& sequence, FinishReason reason,
                    std::string stop_reason) {
  if (sequence.finished) return;
  sequence.finished = true;
  Completion& out = *sequence.out;
  if (sequence.detokenizer != nullptr)
    out.text += sequence.detokenizer->Flush();
  out.finish_reason = reason;
  out.stop_reason = std::move(stop_reason);
  metrics_.Finished(NameOf(reason, kFinishReasonNames, "unknown"));
  Request& request = *sequence.request;
  if (request.finished) return;
  if (request.spec.on_progress) {
    request.spec.on_progress(sequence.prompt, sequence.sample, out, true);
  }
  if (--request.unfinished == 0) {
    request.finished = true;
    const absl::Time now = absl::Now();
    request.result.queue_seconds =
        Seconds(*request.started - request.submitted);
    request.result.generate_seconds = Seconds(now - *request.started);
    request.done(std::move(request.result));
  }
}

void Engine::FailRequest(Request& request, const absl::Status& status) {
  if (request.finished) return;
  request.finished = true;
  request.done(status);
}

void Engine::Compact() {
  // From the back, so the sequence moved into a hole is never one being
  // removed.
  for (size_t i = running_.size(); i-- > 0;) {
    Sequence& sequence = *running_[i];
    if (!sequence.finished && !sequence.request->finished) continue;
    if (sequence.prompt_slot >= 0)
      prompt_slots_.RemoveReader(sequence.prompt_slot);
    const size_t last = running_.size() - 1;
    if (i != last) {
      cache_->CopyPrefix(static_cast<int64_t>(last), static_cast<int64_t>(i),
                         cache_->length(static_cast<int64_t>(last)));
      running_[i] = std::move(running_[last]);
    }
    running_.pop_back();
  }
  prompt_slots_.Release(*cache_, [this](int from, int to) {
    for (auto& sequence : running_) {
      if (sequence->prompt_slot == from) sequence->prompt_slot = to;
    }
  });
  // An adapter no longer resident goes with its last sequence.
  if (running_.empty()) running_adapter_.reset();
}

std::optional<model::SharedPrompts> Engine::SharedPromptView(
    int64_t key_bucket, at::Tensor* rotary_offsets) const {
  std::vector<PromptSlots::Reader> rows(running_.size());
  for (size_t i = 0; i < running_.size(); ++i) {
    const Sequence& sequence = *running_[i];
    rows[i] = {sequence.prompt_slot, sequence.prompt_offset,
               sequence.prompt_length};
  }
  return prompt_slots_.View(rows, key_bucket, cache_->capacity(),
                            decoder_->options().device, rotary_offsets);
}

void Engine::DropCancelled() {
  bool any = false;
  auto cancelled = [](const Request& r) { return r.spec.cancelled->load(); };
  for (auto& sequence : running_) {
    if (!sequence->request->finished && cancelled(*sequence->request)) {
      FailRequest(*sequence->request,
                  absl::CancelledError("the client cancelled the request"));
      any = true;
    }
  }
  if (any) Compact();
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->finished || cancelled(**it)) {
      FailRequest(**it,
                  absl::CancelledError("the client cancelled the request"));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
}

void Engine::FailAll(const absl::Status& status) {
  for (auto& sequence : running_) FailRequest(*sequence->request, status);
  running_.clear();
  running_adapter_.reset();
  prompt_slots_.Clear();
  for (auto& request : waiting_) FailRequest(*request, status);
  waiting_.clear();
}

int64_t Engine::WaitingSequences() const {
  int64_t waiting = 0;
  for (const auto& request : waiting_) {
    if (request->finished) continue;
    waiting += (static_cast<int64_t>(request->spec.prompts.size()) -
                request->next_prompt) *
                   request->spec.group_size -
               request->next_sample;
  }
  return waiting;
}

void Engine::Publish() {
  const absl::Time now = absl::Now();
  metrics_.PublishRate(now, running_.empty() && waiting_.empty());
  int64_t used = 0;
  if (cache_.has_value()) {
    for (size_t i = 0; i < running_.size(); ++i)
      used += cache_->length(static_cast<int64_t>(i));
    used += prompt_slots_.used_tokens();
  }
  const int64_t waiting = WaitingSequences();
  metrics_.PublishLoad(
      now, static_cast<int64_t>(running_.size()), waiting,
      static_cast<double>(used) /
          static_cast<double>(num_slots_ * options_.max_model_len),
      ToDevice(decoder_->options().device));
  std::lock_guard<std::mutex> lock(mu_);
  snapshot_.state = sleeping_ ? EngineState::kSleeping : EngineState::kReady;
  snapshot_.adapter_version = adapter_version_;
  snapshot_.adapter_rank =
      adapter_ != nullptr ? static_cast<int>(adapter_->config().rank) : 0;
  snapshot_.resident_versions.clear();
  for (const auto& [version, adapter] : resident_)
    snapshot_.resident_versions.push_back(version);
  snapshot_.adapter_targets.clear();
  if (adapter_ != nullptr) {
    for (model::LoraModule module : adapter_->config().targets) {
      snapshot_.adapter_targets.push_back(model::LoraModuleName(module));
    }
  }
  snapshot_.running_sequences = static_cast<int>(running_.size());
  snapshot_.waiting_sequences = static_cast<int>(waiting);
  snapshot_.kv_cache_bytes = cache_.has_value() ? cache_->bytes() : 0;
  snapshot_.kv_cache_used_tokens = used;
  snapshot_.generated_tokens = generated_total_;
  snapshot_.shared_prompts = shared_prompts_;
  snapshot_.copied_prompts = copied_prompts_;
}

}  // namespace microrl::rollout
