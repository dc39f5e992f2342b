#ifndef MICRORL_ROLLOUT_SERVER_ENGINE_H_
#define MICRORL_ROLLOUT_SERVER_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model/decoder.h"
#include "common/model/kv_cache.h"
#include "common/model/lora.h"
#include "common/tokenizer/tokenizer.h"
#include "prometheus/registry.h"
#include "rollout_server/engine_metrics.h"
#include "rollout_server/generation.h"
#include "rollout_server/prompt_slots.h"
#include "rollout_server/sampler.h"

namespace microrl::rollout {

class DecodeGraphs;

struct EngineOptions {
  // Memory for keys and values; the number of sequence slots is this over one
  // slot's size (max_model_len tokens).
  int64_t kv_cache_bytes = int64_t{256} << 20;
  // Tokens per sequence, prompt + completion.
  int64_t max_model_len = 4096;
  // Completion tokens when a request does not say.
  int64_t default_max_tokens = 1024;
  // Largest group_size accepted.
  int max_group_size = 1024;
  // Token ids that end a completion unless a request sets ignore_eos.
  std::vector<int64_t> eos_token_ids;
  // Padded prompt tokens per batched prefill (one prompt may exceed it alone).
  int64_t prefill_tokens = 8192;
  // Decode steps run back to back before the sampled tokens are read back
  // (each step's tokens feed the next on the device): the host waits for the
  // GPU once per window, not once per token. A sequence that stops inside a
  // window has its later tokens dropped (at most this many - 1 wasted steps),
  // and a window never runs a sequence past its max_tokens. The tokens are
  // the same as with 1. 0: 8 on CUDA, 1 on the CPU (where nothing waits).
  int64_t decode_steps_per_sync = 0;
  // Decode steps replayed from CUDA graphs (DecodeGraphs), one per batch size
  // bucket and key-length bucket, captured on first use and again after each
  // adapter swap or Sleep. CUDA only.
  bool cuda_graphs = false;
  // Decode attends over key positions rounded up to a multiple of this (masked
  // beyond each sequence), so shapes repeat: 0 is exact lengths, or 256 with
  // cuda_graphs.
  int64_t decode_key_bucket = 0;
  // The prompt of a group of two or more completions is prefilled into a
  // prompt slot (PromptSlots) and read from there by all of them, each keeping
  // only its own tokens in its slot: a decode step reads a group's prompt keys
  // once rather than once per completion. A prompt slot holds several prompts
  // and is taken from the slot budget only while one of its prompts is in
  // use; when no slot is free for one, the prompt is copied to each
  // completion's slot as before. Off with cuda_graphs (whose shapes do not
  // cover prompt slots). Off by default until measured on a GPU: it saves
  // reading (G - 1) / G of the prompts' keys per step but adds about 10 small
  // kernels per layer.
  bool share_prompt_kv = false;
  // Bounds of the queue: requests, and their completions (prompts x group
  // size), submitted and not finished yet. Past either, Submit refuses with
  // ResourceExhausted (a flood cannot grow the server's memory without bound).
  int64_t max_queued_requests = 256;
  int64_t max_queued_completions = 65536;
};

enum class EngineState { kReady, kSleeping };

struct EngineSnapshot {
  EngineState state = EngineState::kReady;
  uint64_t adapter_version = 0;
  int adapter_rank = 0;
  std::vector<std::string> adapter_targets;
  // Versions held resident for requests that name one, ascending (the newest
  // is adapter_version).
  std::vector<uint64_t> resident_versions;
  int running_sequences = 0;
  int waiting_sequences = 0;
  int64_t kv_cache_bytes = 0;  // reserved now
  int64_t kv_cache_budget_bytes = 0;
  int64_t num_slots = 0;
  int64_t kv_cache_used_tokens = 0;
  uint64_t generated_tokens = 0;  // since start
  // Prompts of groups of two or more completions since start, by where their
  // KV went (share_prompt_kv): held once in a prompt slot, or copied into each
  // completion's slot.
  uint64_t shared_prompts = 0;
  uint64_t copied_prompts = 0;
};

// OK if `version` is above the `loaded` adapter version, else
// FAILED_PRECONDITION: adapter versions only go up.
absl::Status CheckAdapterVersionAbove(uint64_t version, uint64_t loaded);

// The generation engine. One thread owns the decoder's KV cache, the current
// adapter and every running sequence; callers talk to it through thread-safe
// methods that enqueue work and never run model code themselves.
//
// Each prompt's G completions share one prefill (its keys and values are
// computed once and copied to the other slots). Sequences join and leave the
// running batch between decode steps (continuous batching) as KV slots allow;
// requests that do not fit wait. All running sequences use the same adapter
// version: a request of another version (a newer adapter, or an older one it
// names) waits until the running ones finish, so no completion mixes
// versions. A loaded adapter is the newest from the next step on; the older
// ones the loader asks to keep stay resident for requests that name them.
class Engine {
 public:
  // `tokenizer` may be null (then text and stop strings are unavailable).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      std::shared_ptr<const model::Decoder> decoder,
      std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
      const EngineOptions& options, prometheus::Registry& registry);
  // Stops the engine thread; requests still pending fail with Unavailable.
  ~Engine();

  // Checks a request against the model and limits; InvalidArgument with a
  // message naming the problem, ResourceExhausted if a group can never fit.
  absl::Status Validate(const GenerationRequest& request) const;

  // Queues a request. `done` runs exactly once, on the engine thread (or the
  // caller's, for an immediate refusal): the result, or InvalidArgument,
  // Unavailable (sleeping and not waiting, or stopping), FailedPrecondition
  // (adapter older than min_adapter_version, or the version the request names
  // not resident), Cancelled, ResourceExhausted
  // (the queue is at max_queued_requests or max_queued_completions).
  void Submit(GenerationRequest request,
              std::function<void(absl::StatusOr<GenerationResult>)> done);

  // Makes `adapter` the newest, as `version`, between decode steps: requests
  // that start from then on (and name no version) use it; running sequences,
  // and the rest of a request partly started, finish with theirs. The newest
  // `keep_versions` versions (this one included, at least 1) stay resident;
  // older ones go once no request uses them. FailedPrecondition if `version`
  // is not above the newest. Returns the seconds from the call to the load
  // taking effect.
  absl::StatusOr<double> LoadAdapter(
      std::shared_ptr<const model::LoraAdapter> adapter, uint64_t version,
      int keep_versions = 1);

  // Frees the KV cache and returns cached device memory to the driver; base
  // weights and the adapter stay. With abort_running, running sequences end at
  // once (FinishReason::kAbort); otherwise Sleep waits for them. Returns bytes
  // freed. Idempotent.
  absl::StatusOr<int64_t> Sleep(bool abort_running);
  // Re-reserves the KV cache; returns its bytes. Idempotent.
  absl::StatusOr<int64_t> Wake();

  EngineSnapshot Snapshot() const;
  const model::Decoder& decoder() const { return *decoder_; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const tokenizer::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  int64_t max_model_len() const { return options_.max_model_len; }
  const std::vector<int64_t>& eos_token_ids() const {
    return options_.eos_token_ids;
  }

 private:
  struct Request;
  struct Sequence;
  struct Control;
  // Part of a request admitted together: completions [first, first + count) of
  // one prompt, sharing one prefill.
  struct Chunk {
    std::shared_ptr<Request> request;
    int prompt = 0;
    int first = 0;
    int count = 0;
    uint64_t version = 0;  // its adapter version (0: none)
    int prompt_slot = -1;  // the prompt slot holding the prompt, or -1
    int64_t offset = 0;    // where in it
  };

  Engine(std::shared_ptr<const model::Decoder> decoder,
         std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
         const EngineOptions& options, int64_t num_slots, model::KvCache cache,
         prometheus::Registry& registry);

  void Loop();
  // Engine-thread steps.
  void Accept(std::shared_ptr<Request> request);
  void HandleControls();
  void Admit();
  void Prefill(const std::vector<Chunk>& chunks);
  void DecodeStep();
  // Samples from logits [N, V] for running_[first, first + N), appends the
  // tokens and removes the sequences that finished.
  void SampleAndAppend(const at::Tensor& logits, size_t first);
  // Sampling parameters of running_[first, first + n) for the token `ahead`
  // positions after the last appended one.
  std::vector<RowSampling> SamplingRows(size_t first, int64_t n,
                                        int64_t ahead) const;
  void CountGenerated(int64_t tokens);
  // The top log-probs read back with a sampled token: k ids and k values
  // (as doubles, most likely first), or none.
  struct TopLogprobs {
    const double* ids = nullptr;
    const double* values = nullptr;
    int64_t k = 0;
  };
  // Appends a sampled token (AppendToken: stop checks and text, finishing the
  // sequence if it stops there) and reports it to the request's on_progress.
  void Append(Sequence& sequence, int32_t token, float logprob,
              const TopLogprobs& top);
  void AppendToken(Sequence& sequence, int32_t token, float logprob,
                   const TopLogprobs& top);
  void Finish(Sequence& sequence, FinishReason reason, std::string stop_reason);
  void FailRequest(Request& request, const absl::Status& status);
  // Removes finished sequences (and those of finished requests) from running_,
  // moving the last ones into the holes so slots stay 0..N-1.
  void Compact();
  void DropCancelled();
  void FailAll(const absl::Status& status);
  // Which running rows read which prompt slot (PromptSlots::View).
  std::optional<model::SharedPrompts> SharedPromptView(
      int64_t key_bucket, at::Tensor* rotary_offsets) const;
  void Publish();
  // The running batch's adapter (null: none).
  const model::LoraAdapter* RunningAdapter() const;
  // The version a request's next completion would use (see Request).
  uint64_t VersionFor(const Request& request) const;
  // Whether the first waiting request has some completions admitted already.
  bool HeadPartlyAdmitted() const;
  // Ends running sequences and the unadmitted rest of a partly admitted
  // request with FinishReason::kAbort.
  void AbortForSleep();
  // Queues a control for the engine thread and waits for it to be applied.
  absl::Status RunControl(std::shared_ptr<Control> control);
  int64_t WaitingSequences() const;

  const std::shared_ptr<const model::Decoder> decoder_;
  const std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  const EngineOptions options_;
  const int64_t num_slots_;
  const int64_t slot_bytes_;

  // --- shared with callers, guarded by mu_
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Request>> incoming_;
  std::deque<std::shared_ptr<Control>> incoming_controls_;
  bool stopping_ = false;
  // Submitted and not done yet (guarded by mu_).
  int64_t queued_requests_ = 0;
  int64_t queued_completions_ = 0;
  EngineSnapshot snapshot_;  // published by the engine thread after each step
  std::mutex load_mu_;       // one LoadAdapter at a time

  // --- owned by the engine thread
  std::optional<model::KvCache> cache_;
  std::unique_ptr<DecodeGraphs> graphs_;           // with cuda_graphs
  std::deque<std::shared_ptr<Control>> controls_;  // applied in order
  std::deque<std::shared_ptr<Request>> waiting_;
  // running_[i] holds KV slot i.
  std::vector<std::unique_ptr<Sequence>> running_;
  PromptSlots prompt_slots_;
  bool share_prompts_ = false;  // share_prompt_kv and no graphs
  // The newest adapter, and the versions kept resident (the newest included).
  std::shared_ptr<const model::LoraAdapter> adapter_;
  uint64_t adapter_version_ = 0;
  std::map<uint64_t, std::shared_ptr<const model::LoraAdapter>> resident_;
  // The adapter the running batch uses (null: none) and its version.
  std::shared_ptr<const model::LoraAdapter> running_adapter_;
  uint64_t running_version_ = 0;
  uint64_t graphs_version_ = 0;  // the adapter copied into graphs_
  bool sleeping_ = false;
  uint64_t generated_total_ = 0;
  std::thread thread_;

  uint64_t shared_prompts_ = 0;
  uint64_t copied_prompts_ = 0;
  EngineMetrics metrics_;
};

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_ENGINE_H_
