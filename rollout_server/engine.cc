#include "rollout_server/engine.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"
#include "common/base/random.h"
#include "common/device/device.h"
#include "common/model/tensor_io.h"
#include "rollout_server/decode_graphs.h"
#include "rollout_server/request_validation.h"
#include "rollout_server/sampler.h"
#include "rollout_server/stop_criteria.h"

namespace microrl::rollout {
namespace {

// The seed of completion `sample` of prompt `prompt`: a function of the
// request's seed and the completion's place in the request only.
uint64_t SequenceSeed(uint64_t request_seed, int prompt, int sample) {
  return SplitMix64(request_seed ^
                    SplitMix64((static_cast<uint64_t>(prompt) << 32) |
                               static_cast<uint32_t>(sample)));
}

double Seconds(absl::Duration duration) {
  return absl::ToDoubleSeconds(duration);
}

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "unknown";
}

device::Device ToDevice(const at::Device& device) {
  return {device.is_cuda(),
          device.is_cuda() ? std::max<int>(0, device.index()) : 0};
}

int64_t SlotBytes(const model::ModelConfig& config, at::ScalarType dtype,
                  int64_t max_model_len) {
  // Keys and values of every layer for max_model_len positions.
  return 2 * config.num_layers * config.num_kv_heads * config.head_dim *
         static_cast<int64_t>(c10::elementSize(dtype)) * max_model_len;
}

absl::StatusOr<model::KvCache> ReserveCache(const model::Decoder& decoder,
                                            int64_t num_slots,
                                            int64_t max_model_len) {
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

}  // namespace

struct Engine::Request {
  GenerationRequest spec;
  std::function<void(absl::StatusOr<GenerationResult>)> done;
  GenerationResult result;
  uint64_t seed = 0;
  std::vector<int64_t> max_tokens;   // per prompt
  StopCriteria stop;
  std::optional<bool> uses_adapter;  // fixed when its first completion starts
  int next_prompt = 0;               // the next completion to admit
  int next_sample = 0;
  int64_t unfinished = 0;  // completions not finished yet
  absl::Time submitted;
  std::optional<absl::Time> started;
  bool finished = false;  // done() has run
};

struct Engine::Sequence {
  std::shared_ptr<Request> request;
  int prompt = 0;
  int sample = 0;
  int64_t max_tokens = 0;
  uint64_t seed = 0;
  int32_t last_token = 0;  // sampled, not yet in the KV cache
  bool uses_adapter = false;
  // The prompt's KV: in prompt slot `prompt_slot` at [prompt_offset,
  // + prompt_length), the sequence's slot holding only its completion, or
  // (prompt_slot -1) in its own slot.
  int prompt_slot = -1;
  int64_t prompt_offset = 0;
  int64_t prompt_length = 0;
  bool finished = false;
  std::unique_ptr<tokenizer::IncrementalDecoder> detokenizer;
  Completion* out = nullptr;
};

struct Engine::Control {
  enum class Kind { kLoadAdapter, kSleep, kWake } kind;
  std::shared_ptr<const model::LoraAdapter> adapter;
  uint64_t version = 0;
  bool abort_running = false;
  absl::Time submitted = absl::Now();
  // Results: seconds (swap) or bytes (sleep, wake).
  double seconds = 0;
  int64_t bytes = 0;
  std::promise<absl::Status> done;
};

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
      prompt_slots_(num_slots),
      slot_bytes_(SlotBytes(decoder_->config(), decoder_->options().dtype,
                            options.max_model_len)),
      cache_(std::move(cache)),
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
  const int64_t completions =
      static_cast<int64_t>(request.prompts.size()) *
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
          " requests, ", queued_completions_, " completions queued; this one has ",
          completions, "; limits --max_queued_requests=",
          options_.max_queued_requests, ", --max_queued_completions=",
          options_.max_queued_completions, "): retry later"));
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

absl::Status Engine::RunControl(std::shared_ptr<Control> control) {
  std::future<absl::Status> result = control->done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      return absl::UnavailableError("the rollout engine is shutting down");
    }
    incoming_controls_.push_back(std::move(control));
  }
  wake_.notify_all();
  return result.get();
}

absl::StatusOr<double> Engine::LoadAdapter(
    std::shared_ptr<const model::LoraAdapter> adapter, uint64_t version) {
  if (adapter == nullptr) return absl::InvalidArgumentError("no adapter");
  if (version == 0) {
    return absl::InvalidArgumentError("adapter versions start at 1");
  }
  if (adapter->num_layers() != decoder_->config().num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("the adapter has ", adapter->num_layers(),
                     " layers; the model has ", decoder_->config().num_layers));
  }
  std::lock_guard<std::mutex> serial(load_mu_);
  auto control = std::make_shared<Control>();
  control->kind = Control::Kind::kLoadAdapter;
  control->adapter = std::move(adapter);
  control->version = version;
  if (absl::Status status = RunControl(control); !status.ok()) return status;
  return control->seconds;
}

absl::StatusOr<int64_t> Engine::Sleep(bool abort_running) {
  auto control = std::make_shared<Control>();
  control->kind = Control::Kind::kSleep;
  control->abort_running = abort_running;
  if (absl::Status status = RunControl(control); !status.ok()) return status;
  return control->bytes;
}

absl::StatusOr<int64_t> Engine::Wake() {
  auto control = std::make_shared<Control>();
  control->kind = Control::Kind::kWake;
  if (absl::Status status = RunControl(control); !status.ok()) return status;
  return control->bytes;
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

bool Engine::HeadPartlyAdmitted() const {
  return !waiting_.empty() && !waiting_.front()->finished &&
         waiting_.front()->uses_adapter.has_value();
}

void Engine::AbortForSleep() {
  for (auto& sequence : running_) Finish(*sequence, FinishReason::kAbort, "");
  Compact();
  // The completions of a partly admitted request that never started end too.
  if (HeadPartlyAdmitted()) {
    std::shared_ptr<Request> head = waiting_.front();
    waiting_.pop_front();
    const int prompts = static_cast<int>(head->spec.prompts.size());
    for (; head->next_prompt < prompts;
         ++head->next_prompt, head->next_sample = 0) {
      for (; head->next_sample < head->spec.group_size; ++head->next_sample) {
        Sequence aborted;
        aborted.request = head;
        aborted.out =
            &head->result.groups[head->next_prompt][head->next_sample];
        Finish(aborted, FinishReason::kAbort, "");
      }
    }
  }
}

void Engine::HandleControls() {
  // An aborting Sleep does not wait behind the drain of an earlier control.
  if (!sleeping_ &&
      std::any_of(controls_.begin(), controls_.end(), [](const auto& c) {
        return c->kind == Control::Kind::kSleep && c->abort_running;
      })) {
    AbortForSleep();
  }
  while (!controls_.empty()) {
    Control& control = *controls_.front();
    absl::Status result;
    switch (control.kind) {
      case Control::Kind::kLoadAdapter: {
        if (control.version <= adapter_version_) {
          result = absl::FailedPreconditionError(absl::StrCat(
              "adapter version ", control.version,
              " is not above the loaded version ", adapter_version_));
          break;
        }
        // Running sequences, and the rest of a request partly admitted,
        // finish with the adapter they started with.
        if (RunningUsesAdapter() || HeadPartlyAdmitted()) return;
        // The graphs run their own copy of the adapter: the new weights go
        // into it (no running sequence uses the adapter now).
        if (graphs_ != nullptr) graphs_->SetAdapter(*control.adapter);
        adapter_ = control.adapter;
        adapter_version_ = control.version;
        control.seconds = Seconds(absl::Now() - control.submitted);
        metrics_.Swapped(control.seconds, adapter_version_);
        MRL_LOG(INFO) << "adapter version " << adapter_version_ << " (rank "
                      << adapter_->config().rank << ") in use after "
                      << control.seconds << " s";
        result = absl::OkStatus();
        break;
      }
      case Control::Kind::kSleep: {
        if (sleeping_) {
          control.bytes = 0;
          result = absl::OkStatus();
          break;
        }
        if (control.abort_running) AbortForSleep();
        // Otherwise started requests finish first.
        if (!running_.empty() || HeadPartlyAdmitted()) return;
        const int64_t before =
            device::QueryMemory(ToDevice(decoder_->options().device))
                .reserved_bytes;
        const int64_t cache_bytes = cache_->bytes();
        if (graphs_ != nullptr) graphs_->Clear();  // they hold the cache
        cache_.reset();
        device::ReleaseCachedMemory(ToDevice(decoder_->options().device));
        const int64_t after =
            device::QueryMemory(ToDevice(decoder_->options().device))
                .reserved_bytes;
        // On the CPU the allocator reports nothing; the cache's bytes are what
        // went.
        control.bytes = decoder_->options().device.is_cuda()
                            ? std::max<int64_t>(0, before - after)
                            : cache_bytes;
        sleeping_ = true;
        // Requests that have not started and may not wait are refused now.
        for (auto it = waiting_.begin(); it != waiting_.end();) {
          if (!(*it)->spec.wait_if_sleeping && !(*it)->finished) {
            FailRequest(**it, absl::UnavailableError(
                                  "the rollout server went to sleep before "
                                  "this request started; call Wake, or set "
                                  "wait_if_sleeping to wait"));
            it = waiting_.erase(it);
          } else {
            ++it;
          }
        }
        metrics_.Asleep(true, 0);
        MRL_LOG(INFO) << "asleep: released " << control.bytes << " bytes";
        result = absl::OkStatus();
        break;
      }
      case Control::Kind::kWake: {
        if (sleeping_) {
          absl::StatusOr<model::KvCache> cache =
              ReserveCache(*decoder_, num_slots_, options_.max_model_len);
          if (!cache.ok()) {
            result = cache.status();
            break;
          }
          cache_.emplace(*std::move(cache));
          sleeping_ = false;
          metrics_.Asleep(false, cache_->bytes());
          MRL_LOG(INFO) << "awake: KV cache of " << cache_->bytes() << " bytes";
        }
        control.bytes = cache_->bytes();
        result = absl::OkStatus();
        break;
      }
    }
    // What Info reports reflects the control before its caller returns.
    Publish();
    control.done.set_value(std::move(result));
    controls_.pop_front();
  }
}

bool Engine::RunningUsesAdapter() const {
  return !running_.empty() && running_.front()->uses_adapter;
}

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
  // The adapter mode of the batch: every running sequence uses the adapter or
  // none does.
  std::optional<bool> mode;
  if (!running_.empty()) mode = RunningUsesAdapter();
  while (!waiting_.empty() && free > 0) {
    std::shared_ptr<Request> request = waiting_.front();
    if (request->finished) {
      waiting_.pop_front();
      continue;
    }
    if (only_started && !request->uses_adapter.has_value()) break;
    const bool uses_adapter = request->uses_adapter.value_or(
        !request->spec.disable_adapter && adapter_ != nullptr);
    if (mode.has_value() && *mode != uses_adapter) break;
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
                      static_cast<int>(count), uses_adapter,
                      place.has_value() ? place->index : -1,
                      place.has_value() ? place->offset : 0});
    mode = uses_adapter;
    request->uses_adapter = uses_adapter;
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
      sequence->seed =
          SequenceSeed(chunk.request->seed, chunk.prompt, sequence->sample);
      sequence->out =
          &chunk.request->result.groups[chunk.prompt][sequence->sample];
      sequence->uses_adapter = chunk.uses_adapter;
      sequence->prompt_slot = chunk.prompt_slot;
      sequence->prompt_offset = chunk.offset;
      sequence->prompt_length = lengths[r];
      sequence->out->adapter_version =
          chunk.uses_adapter ? adapter_version_ : 0;
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
  run.adapter = chunks.front().uses_adapter ? adapter_.get() : nullptr;
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
      status = SampleAndAppend(logits, first);
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
  run.adapter = RunningUsesAdapter() ? adapter_.get() : nullptr;
  absl::Status status;
  std::vector<at::Tensor> tokens;
  std::vector<at::Tensor> logprobs;
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
      input = sampled.tokens.view({n, 1});
      positions = positions + 1;
    }
    // The cache now holds the window's positions of every row (those of a
    // sequence that stopped inside it go with the sequence).
    for (int64_t i = 0; i < n; ++i) {
      cache_->set_length(i, starts[i] + static_cast<int64_t>(tokens.size()));
    }
    if (status.ok()) {
      // The one device-to-host copy of the window: [2, steps, n].
      const at::Tensor host = at::stack({at::stack(tokens).to(at::kDouble),
                                         at::stack(logprobs).to(at::kDouble)})
                                  .cpu();
      const double* values = host.data_ptr<double>();
      const int64_t steps = static_cast<int64_t>(tokens.size());
      int64_t appended = 0;
      for (int64_t step = 0; step < steps; ++step) {
        for (int64_t i = 0; i < n; ++i) {
          Sequence& sequence = *running_[i];
          if (sequence.finished || sequence.request->finished) continue;
          Append(sequence, static_cast<int32_t>(values[step * n + i]),
                 static_cast<float>(values[(steps + step) * n + i]));
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
    rows[i].position =
        static_cast<int64_t>(sequence.out->token_ids.size()) + ahead;
  }
  return rows;
}

void Engine::CountGenerated(int64_t tokens) {
  metrics_.Generated(tokens);
  generated_total_ += static_cast<uint64_t>(tokens);
}

absl::Status Engine::SampleAndAppend(const at::Tensor& logits, size_t first) {
  const int64_t n = logits.size(0);
  const SampleResult sampled = Sample(logits, SamplingRows(first, n, 0));
  // The one device-to-host copy of the step: tokens and log-probs together.
  const at::Tensor host = at::stack({sampled.tokens.to(at::kDouble),
                                     sampled.logprobs.to(at::kDouble)})
                              .cpu();
  const double* values = host.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    Sequence& sequence = *running_[first + i];
    if (sequence.finished) continue;
    Append(sequence, static_cast<int32_t>(values[i]),
           static_cast<float>(values[n + i]));
  }
  CountGenerated(n);
  return absl::OkStatus();
}

bool Engine::Append(Sequence& sequence, int32_t token, float logprob) {
  Completion& out = *sequence.out;
  const Request& request = *sequence.request;
  out.token_ids.push_back(token);
  out.logprobs.push_back(logprob);
  sequence.last_token = token;
  if (request.stop.IsStopToken(token)) {
    Finish(sequence, FinishReason::kStop,
           tokenizer_ != nullptr ? tokenizer_->IdToToken(token)
                                 : absl::StrCat(token));
    return true;
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
        return true;
      }
    }
  }
  if (static_cast<int64_t>(out.token_ids.size()) >= sequence.max_tokens) {
    Finish(sequence, FinishReason::kLength, "");
    return true;
  }
  return false;
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
  metrics_.Finished(FinishReasonName(reason));
  Request& request = *sequence.request;
  if (request.finished) return;
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
