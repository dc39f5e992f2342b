// The generation engine against the model core's full-sequence path: greedy
// decoding equals the step-by-step argmax of Decoder::Forward, returned
// log-probs equal ComputeTokenStats (what the learner computes), seeds,
// continuous batching under a small KV budget, hot-swaps under load,
// sleep/wake, cancellation and bad requests.
#include "rollout_server/engine.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "common/model/token_stats.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "tests/support/tiny_model.h"

namespace microrl::rollout {
namespace {

using ::microrl::testing::RandomAdapter;
using ::microrl::testing::TinyDecoder;
using ::testing::HasSubstr;

// Bytes of one sequence slot of the tiny model: keys and values, 2 layers x 2
// KV heads x 8 dims x 4 bytes per position.
constexpr int64_t kBytesPerPosition = 2 * 2 * 2 * 8 * 4;

struct TestEngine {
  std::shared_ptr<const model::Decoder> decoder;
  std::unique_ptr<prometheus::Registry> registry =
      std::make_unique<prometheus::Registry>();
  std::unique_ptr<Engine> engine;
};

TestEngine MakeEngine(int64_t slots, int64_t max_model_len = 64,
                      std::vector<int64_t> eos = {},
                      int64_t decode_steps_per_sync = 0,
                      int64_t decode_key_bucket = 0,
                      // On here (off in the server by default), so that every
                      // engine test runs the shared-prompt path; the copy
                      // path runs in the rollout server's own tests.
                      bool share_prompt_kv = true) {
  TestEngine t;
  t.decoder = TinyDecoder();
  EngineOptions options;
  options.max_model_len = max_model_len;
  options.kv_cache_bytes = slots * max_model_len * kBytesPerPosition;
  options.default_max_tokens = 16;
  options.max_group_size = 64;
  options.eos_token_ids = std::move(eos);
  options.decode_steps_per_sync = decode_steps_per_sync;
  options.decode_key_bucket = decode_key_bucket;
  options.share_prompt_kv = share_prompt_kv;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(t.decoder, nullptr, options, *t.registry);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (engine.ok()) t.engine = *std::move(engine);
  return t;
}

std::future<absl::StatusOr<GenerationResult>> SubmitAsync(
    Engine& engine, GenerationRequest request) {
  auto promise =
      std::make_shared<std::promise<absl::StatusOr<GenerationResult>>>();
  std::future<absl::StatusOr<GenerationResult>> future = promise->get_future();
  engine.Submit(std::move(request),
                [promise](absl::StatusOr<GenerationResult> result) {
                  promise->set_value(std::move(result));
                });
  return future;
}

absl::StatusOr<GenerationResult> Generate(Engine& engine,
                                          GenerationRequest request) {
  return SubmitAsync(engine, std::move(request)).get();
}

GenerationRequest Request(std::vector<std::vector<int32_t>> prompts,
                          int group_size, double temperature,
                          int64_t max_tokens,
                          std::optional<uint64_t> seed = 7) {
  GenerationRequest request;
  request.prompts = std::move(prompts);
  request.group_size = group_size;
  request.sampling.temperature = temperature;
  request.sampling.max_tokens = max_tokens;
  request.sampling.seed = seed;
  return request;
}

// What the learner computes for a completion: log softmax(logits / T) of each
// completion token from one forward pass over prompt + completion, and the
// argmax at each position.
struct Scored {
  std::vector<float> logprobs;
  std::vector<int64_t> argmax;
};

Scored Score(const model::Decoder& decoder, const std::vector<int32_t>& prompt,
             const std::vector<int32_t>& completion, double temperature,
             const model::LoraAdapter* adapter) {
  c10::InferenceMode inference;
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  ids.insert(ids.end(), completion.begin(), completion.end());
  const int64_t n = static_cast<int64_t>(completion.size());
  const int64_t p = static_cast<int64_t>(prompt.size());
  absl::StatusOr<at::Tensor> hidden = decoder.Forward(
      at::tensor(ids, at::kLong).unsqueeze(0), {adapter, false});
  EXPECT_TRUE(hidden.ok()) << hidden.status();
  const at::Tensor rows = (*hidden)[0].narrow(0, p - 1, n);
  const at::Tensor targets = at::tensor(
      std::vector<int64_t>(completion.begin(), completion.end()), at::kLong);
  absl::StatusOr<model::TokenStats> stats = model::ComputeTokenStats(
      rows, decoder.lm_head(), targets, temperature > 0 ? temperature : 1.0, 8);
  EXPECT_TRUE(stats.ok()) << stats.status();
  Scored scored;
  const at::Tensor logprobs = stats->logprobs.contiguous();
  scored.logprobs.assign(logprobs.data_ptr<float>(),
                         logprobs.data_ptr<float>() + n);
  const at::Tensor argmax = decoder.Logits(rows).argmax(1).contiguous();
  scored.argmax.assign(argmax.data_ptr<int64_t>(),
                       argmax.data_ptr<int64_t>() + n);
  return scored;
}

void ExpectMatchesScoring(const model::Decoder& decoder,
                          const std::vector<int32_t>& prompt,
                          const Completion& completion, double temperature,
                          const model::LoraAdapter* adapter,
                          const std::string& what) {
  ASSERT_FALSE(completion.token_ids.empty()) << what;
  ASSERT_EQ(completion.token_ids.size(), completion.logprobs.size()) << what;
  const Scored scored =
      Score(decoder, prompt, completion.token_ids, temperature, adapter);
  for (size_t t = 0; t < completion.token_ids.size(); ++t) {
    EXPECT_NEAR(completion.logprobs[t], scored.logprobs[t], 1e-4)
        << what << " token " << t;
    if (temperature == 0) {
      EXPECT_EQ(completion.token_ids[t], scored.argmax[t])
          << what << " token " << t;
    }
  }
}

// Every completion of every request, in request, prompt and sample order.
std::vector<Completion> AllCompletions(
    std::vector<std::future<absl::StatusOr<GenerationResult>>>& futures) {
  std::vector<Completion> out;
  for (auto& future : futures) {
    absl::StatusOr<GenerationResult> result = future.get();
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) continue;
    for (const auto& group : result->groups)
      for (const Completion& completion : group) out.push_back(completion);
  }
  return out;
}

std::vector<std::vector<int32_t>> Prompts() {
  return {{3, 17, 5}, {42, 9, 1, 30, 11, 2, 8}, {7}, {12, 19, 33, 4, 25}};
}

TEST(EngineTest, GreedyEqualsArgmaxOfTheFullForward) {
  TestEngine t = MakeEngine(/*slots=*/16);
  ASSERT_NE(t.engine, nullptr);
  absl::StatusOr<GenerationResult> result =
      Generate(*t.engine, Request(Prompts(), 2, 0.0, 12));
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->groups.size(), 4u);
  for (size_t p = 0; p < Prompts().size(); ++p) {
    ASSERT_EQ(result->groups[p].size(), 2u);
    for (const Completion& completion : result->groups[p]) {
      EXPECT_EQ(completion.token_ids.size(), 12u);
      EXPECT_EQ(completion.finish_reason, FinishReason::kLength);
      EXPECT_EQ(completion.adapter_version, 0u);
      ExpectMatchesScoring(*t.decoder, Prompts()[p], completion, 0.0, nullptr,
                           "prompt " + std::to_string(p));
    }
    // Greedy: both completions of a group are the same.
    EXPECT_EQ(result->groups[p][0].token_ids, result->groups[p][1].token_ids);
  }
}

TEST(EngineTest, SequencesJoiningMidFlightDecodeLikeAlone) {
  // Three slots for 2x2 + 3x1 + 1x3 sequences of different lengths: most wait,
  // then join a running batch as others finish (and get moved between slots).
  TestEngine t = MakeEngine(/*slots=*/3);
  ASSERT_NE(t.engine, nullptr);
  std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
  const std::vector<GenerationRequest> requests = {
      Request({Prompts()[0], Prompts()[1]}, 2, 0.0, 5),
      Request({Prompts()[2], Prompts()[3], {5, 5, 5, 5}}, 1, 0.0, 9),
      Request({{30, 31, 32, 33, 34, 35, 36, 37, 38}}, 3, 0.8, 14),
  };
  for (const GenerationRequest& request : requests) {
    futures.push_back(SubmitAsync(*t.engine, request));
  }
  for (size_t r = 0; r < requests.size(); ++r) {
    absl::StatusOr<GenerationResult> result = futures[r].get();
    ASSERT_TRUE(result.ok()) << result.status();
    for (size_t p = 0; p < requests[r].prompts.size(); ++p) {
      for (const Completion& completion : result->groups[p]) {
        EXPECT_EQ(static_cast<int64_t>(completion.token_ids.size()),
                  requests[r].sampling.max_tokens);
        ExpectMatchesScoring(
            *t.decoder, requests[r].prompts[p], completion,
            requests[r].sampling.temperature, nullptr,
            "request " + std::to_string(r) + " prompt " + std::to_string(p));
      }
    }
  }
  // Published after the step that ended the last request.
  for (int i = 0; i < 500 && t.engine->Snapshot().running_sequences > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(t.engine->Snapshot().running_sequences, 0);
}

TEST(EngineTest, LogprobsEqualTheScoringPathWithSamplingAndAdapter) {
  TestEngine t = MakeEngine(/*slots=*/8);
  ASSERT_NE(t.engine, nullptr);
  std::shared_ptr<const model::LoraAdapter> adapter =
      RandomAdapter(t.decoder->config());
  ASSERT_TRUE(t.engine->LoadAdapter(adapter, 3).ok());
  GenerationRequest request = Request(Prompts(), 3, 0.7, 10);
  request.sampling.top_p = 0.9;
  request.sampling.top_k = 20;
  absl::StatusOr<GenerationResult> result = Generate(*t.engine, request);
  ASSERT_TRUE(result.ok()) << result.status();
  for (size_t p = 0; p < Prompts().size(); ++p) {
    for (const Completion& completion : result->groups[p]) {
      EXPECT_EQ(completion.adapter_version, 3u);
      ExpectMatchesScoring(*t.decoder, Prompts()[p], completion, 0.7,
                           adapter.get(), "prompt " + std::to_string(p));
    }
  }
  // disable_adapter samples from the base model and says so.
  request.disable_adapter = true;
  result = Generate(*t.engine, request);
  ASSERT_TRUE(result.ok()) << result.status();
  for (size_t p = 0; p < Prompts().size(); ++p) {
    for (const Completion& completion : result->groups[p]) {
      EXPECT_EQ(completion.adapter_version, 0u);
      ExpectMatchesScoring(*t.decoder, Prompts()[p], completion, 0.7, nullptr,
                           "base, prompt " + std::to_string(p));
    }
  }
}

TEST(EngineTest, TopKAndTopPRestrictTheSampledTokens) {
  TestEngine t = MakeEngine(/*slots=*/8);
  ASSERT_NE(t.engine, nullptr);
  GenerationRequest request = Request({Prompts()[1]}, 8, 1.5, 12);
  request.sampling.top_k = 1;  // top_k 1 is greedy whatever the temperature
  absl::StatusOr<GenerationResult> sampled = Generate(*t.engine, request);
  absl::StatusOr<GenerationResult> greedy =
      Generate(*t.engine, Request({Prompts()[1]}, 1, 0.0, 12));
  ASSERT_TRUE(sampled.ok() && greedy.ok());
  for (const Completion& completion : sampled->groups[0]) {
    EXPECT_EQ(completion.token_ids, greedy->groups[0][0].token_ids);
  }
  request.sampling.top_k = 0;
  request.sampling.top_p = 1e-6;  // only the most likely token survives
  sampled = Generate(*t.engine, request);
  ASSERT_TRUE(sampled.ok());
  for (const Completion& completion : sampled->groups[0]) {
    EXPECT_EQ(completion.token_ids, greedy->groups[0][0].token_ids);
  }
}

// A batch split across requests (data-parallel ranks, several servers)
// samples what the whole batch would: seeds follow first_prompt_index + p.
TEST(EngineTest, FirstPromptIndexSplitsABatchWithoutChangingIt) {
  TestEngine t = MakeEngine(/*slots=*/16);
  ASSERT_NE(t.engine, nullptr);
  const std::vector<std::vector<int32_t>> prompts = Prompts();
  absl::StatusOr<GenerationResult> whole =
      Generate(*t.engine, Request(prompts, 3, 1.0, 12, 21));
  ASSERT_TRUE(whole.ok()) << whole.status();
  for (uint32_t p = 0; p < prompts.size(); ++p) {
    GenerationRequest part = Request({prompts[p]}, 3, 1.0, 12, 21);
    part.sampling.first_prompt_index = p;
    absl::StatusOr<GenerationResult> alone = Generate(*t.engine, part);
    ASSERT_TRUE(alone.ok()) << alone.status();
    for (int g = 0; g < 3; ++g) {
      EXPECT_EQ(alone->groups[0][g].token_ids, whole->groups[p][g].token_ids)
          << "prompt " << p << " completion " << g;
    }
  }
  // Without the offset, the second prompt alone samples as a first prompt.
  absl::StatusOr<GenerationResult> unshifted =
      Generate(*t.engine, Request({prompts[1]}, 3, 1.0, 12, 21));
  ASSERT_TRUE(unshifted.ok());
  EXPECT_NE(unshifted->groups[0][0].token_ids, whole->groups[1][0].token_ids);
}

TEST(EngineTest, SameSeedSameCompletionsDifferentSeedsDiffer) {
  TestEngine t = MakeEngine(/*slots=*/16);
  ASSERT_NE(t.engine, nullptr);
  auto run = [&](uint64_t seed) {
    absl::StatusOr<GenerationResult> result =
        Generate(*t.engine, Request(Prompts(), 4, 1.0, 16, seed));
    EXPECT_TRUE(result.ok()) << result.status();
    std::vector<std::vector<int32_t>> tokens;
    for (const auto& group : result->groups)
      for (const Completion& completion : group)
        tokens.push_back(completion.token_ids);
    return tokens;
  };
  const auto first = run(11);
  EXPECT_EQ(first, run(11));
  EXPECT_NE(first, run(12));
  // Within a request, the completions of a group differ.
  EXPECT_NE(first[0], first[1]);
  // Without a seed, two runs differ.
  absl::StatusOr<GenerationResult> a =
      Generate(*t.engine, Request(Prompts(), 2, 1.0, 16, std::nullopt));
  absl::StatusOr<GenerationResult> b =
      Generate(*t.engine, Request(Prompts(), 2, 1.0, 16, std::nullopt));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->groups[0][0].token_ids, b->groups[0][0].token_ids);
}

TEST(EngineTest, DecodeWindowsGiveTheTokensOfSingleSteps) {
  // Several steps between read-backs: sequences that stop inside a window (EOS,
  // stop ids, max_tokens, a short context) end exactly where single steps end
  // them, with the same tokens and log-probs.
  auto run = [](int64_t window, int64_t key_bucket) {
    TestEngine t =
        MakeEngine(/*slots=*/6, /*max_model_len=*/24, {5}, window, key_bucket);
    EXPECT_NE(t.engine, nullptr);
    std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
    for (const int64_t max_tokens : {0, 3, 7}) {
      GenerationRequest request = Request(Prompts(), 3, 1.0, max_tokens, 21);
      request.sampling.stop_token_ids = {9, 30};
      futures.push_back(SubmitAsync(*t.engine, std::move(request)));
    }
    futures.push_back(
        SubmitAsync(*t.engine, Request({{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}, 2,
                                       0.0, 14)));  // to the end of the context
    const std::vector<Completion> out = AllCompletions(futures);
    return out;
  };
  const std::vector<Completion> single = run(1, 0);
  // Windows, and key lengths rounded up to 16 (masked beyond each sequence, as
  // CUDA graphs run them; 24 positions make the last bucket partial).
  for (const std::vector<Completion>& windowed : {run(5, 0), run(3, 16)}) {
    ASSERT_EQ(single.size(), windowed.size());
    int stopped_early = 0;
    for (size_t i = 0; i < single.size(); ++i) {
      EXPECT_EQ(single[i].token_ids, windowed[i].token_ids) << i;
      EXPECT_EQ(single[i].finish_reason, windowed[i].finish_reason) << i;
      EXPECT_EQ(single[i].stop_reason, windowed[i].stop_reason) << i;
      ASSERT_EQ(single[i].logprobs.size(), windowed[i].logprobs.size()) << i;
      for (size_t t = 0; t < single[i].logprobs.size(); ++t)
        EXPECT_NEAR(single[i].logprobs[t], windowed[i].logprobs[t], 1e-5) << i;
      stopped_early += single[i].finish_reason == FinishReason::kStop;
    }
    // The case the windows are for: some completions stop mid-window.
    EXPECT_GT(stopped_early, 3);
  }
}

TEST(EngineTest, SharedPromptsDecodeLikePromptsCopiedToEachSlot) {
  // Groups read their prompt from host slots (several prompts per host, hosts
  // freed and moved as groups end, and slots copied as before when none is
  // free), beside single completions that keep their prompt in their slot, in
  // the same batches, with windows and rounded key lengths: the tokens and
  // log-probs of prompts copied into every slot.
  auto run = [](bool share, int64_t window, int64_t key_bucket,
                EngineSnapshot* snapshot) {
    TestEngine t = MakeEngine(/*slots=*/7, /*max_model_len=*/24, {5}, window,
                              key_bucket, share);
    EXPECT_NE(t.engine, nullptr);
    std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
    for (const int64_t max_tokens : {0, 3, 11}) {
      GenerationRequest request = Request(Prompts(), 3, 1.0, max_tokens, 21);
      request.sampling.stop_token_ids = {9, 30};
      futures.push_back(SubmitAsync(*t.engine, std::move(request)));
      futures.push_back(SubmitAsync(
          *t.engine, Request({{4, 4, 2}, {6, 1, 6, 1}}, 1, 0.9, 8, 5)));
    }
    // A group as large as the cache leaves no slot for a host: copied.
    futures.push_back(
        SubmitAsync(*t.engine, Request({{8, 6, 4}}, 7, 1.0, 6, 3)));
    // Long prompts fill hosts sooner.
    futures.push_back(SubmitAsync(
        *t.engine, Request({{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
                            {11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22}},
                           2, 0.0, 12)));  // to the end of the context
    const std::vector<Completion> out = AllCompletions(futures);
    // The engine publishes its state after the step that ended the last
    // request; wait for it.
    for (int i = 0; i < 500 && t.engine->Snapshot().running_sequences > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    *snapshot = t.engine->Snapshot();
    return out;
  };
  EngineSnapshot copied_snapshot;
  const std::vector<Completion> copied = run(false, 1, 0, &copied_snapshot);
  EXPECT_EQ(copied_snapshot.shared_prompts, 0u);
  for (const auto& [window, bucket] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 0}, {4, 16}}) {
    SCOPED_TRACE(window);
    EngineSnapshot snapshot;
    const std::vector<Completion> shared = run(true, window, bucket, &snapshot);
    // Both kinds happened, and every group prompt is counted once.
    EXPECT_GT(snapshot.shared_prompts, 3u);
    EXPECT_GT(snapshot.copied_prompts, 0u);
    EXPECT_EQ(snapshot.shared_prompts + snapshot.copied_prompts,
              copied_snapshot.copied_prompts);
    EXPECT_EQ(snapshot.running_sequences, 0);
    EXPECT_EQ(snapshot.kv_cache_used_tokens, 0);  // hosts freed
    ASSERT_EQ(copied.size(), shared.size());
    for (size_t i = 0; i < copied.size(); ++i) {
      EXPECT_EQ(copied[i].token_ids, shared[i].token_ids) << i;
      EXPECT_EQ(copied[i].finish_reason, shared[i].finish_reason) << i;
      ASSERT_EQ(copied[i].logprobs.size(), shared[i].logprobs.size()) << i;
      for (size_t t = 0; t < copied[i].logprobs.size(); ++t)
        EXPECT_NEAR(copied[i].logprobs[t], shared[i].logprobs[t], 1e-5) << i;
    }
  }
}

TEST(EngineTest, AHostFreedUnderReadersOfAnotherMovesIt) {
  // Nine slots: two prompts of the first request fill one host (10 + 12 of 23
  // positions), the second request's prompt opens another; the first request
  // ends first, so the second host moves into the first one's slot while its
  // readers decode on. Their tokens are those of copied prompts.
  auto run = [](bool share) {
    TestEngine t =
        MakeEngine(/*slots=*/9, /*max_model_len=*/24, {}, 1, 0, share);
    EXPECT_NE(t.engine, nullptr);
    // Asleep while both are submitted, so that they start together.
    EXPECT_TRUE(t.engine->Sleep(false).ok());
    GenerationRequest one =
        Request({{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
                 {11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22}},
                2, 0.9, 2, 4);
    GenerationRequest two = Request({{31, 7, 19}}, 2, 0.9, 16, 6);
    one.wait_if_sleeping = two.wait_if_sleeping = true;
    auto first = SubmitAsync(*t.engine, one);
    auto second = SubmitAsync(*t.engine, two);
    EXPECT_TRUE(t.engine->Wake().ok());
    std::vector<std::future<absl::StatusOr<GenerationResult>>> futures;
    futures.push_back(std::move(first));
    futures.push_back(std::move(second));
    const std::vector<Completion> out = AllCompletions(futures);
    EXPECT_EQ(t.engine->Snapshot().shared_prompts, share ? 3u : 0u);
    return out;
  };
  const std::vector<Completion> copied = run(false);
  const std::vector<Completion> shared = run(true);
  ASSERT_EQ(copied.size(), 6u);
  ASSERT_EQ(shared.size(), 6u);
  for (size_t i = 0; i < copied.size(); ++i) {
    EXPECT_EQ(copied[i].token_ids, shared[i].token_ids) << i;
    for (size_t t = 0; t < copied[i].logprobs.size(); ++t)
      EXPECT_NEAR(copied[i].logprobs[t], shared[i].logprobs[t], 1e-5) << i;
  }
}

TEST(EngineTest, StopTokensEosAndLengths) {
  // Find the greedy continuation, then stop on its 4th token.
  TestEngine t = MakeEngine(/*slots=*/4);
  ASSERT_NE(t.engine, nullptr);
  absl::StatusOr<GenerationResult> free_run =
      Generate(*t.engine, Request({Prompts()[0]}, 1, 0.0, 10));
  ASSERT_TRUE(free_run.ok());
  const std::vector<int32_t> tokens = free_run->groups[0][0].token_ids;
  const int32_t stop = tokens[3];
  const size_t first =
      std::find(tokens.begin(), tokens.end(), stop) - tokens.begin();

  GenerationRequest request = Request({Prompts()[0]}, 1, 0.0, 10);
  request.sampling.stop_token_ids = {stop};
  absl::StatusOr<GenerationResult> stopped = Generate(*t.engine, request);
  ASSERT_TRUE(stopped.ok());
  const Completion& c = stopped->groups[0][0];
  EXPECT_EQ(c.finish_reason, FinishReason::kStop);
  EXPECT_EQ(c.stop_reason, std::to_string(stop));
  EXPECT_EQ(c.token_ids,
            std::vector<int32_t>(tokens.begin(), tokens.begin() + first + 1));

  // The model's EOS ends it too, unless ignore_eos.
  TestEngine with_eos = MakeEngine(4, 64, {stop});
  ASSERT_NE(with_eos.engine, nullptr);
  stopped = Generate(*with_eos.engine, Request({Prompts()[0]}, 1, 0.0, 10));
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->groups[0][0].token_ids.size(), first + 1);
  request = Request({Prompts()[0]}, 1, 0.0, 10);
  request.sampling.ignore_eos = true;
  stopped = Generate(*with_eos.engine, request);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->groups[0][0].token_ids, tokens);
  EXPECT_EQ(stopped->groups[0][0].finish_reason, FinishReason::kLength);

  // max_tokens 0 takes the default (16), capped by the context (20 - 3 prompt
  // tokens).
  TestEngine short_context = MakeEngine(4, 20);
  ASSERT_NE(short_context.engine, nullptr);
  absl::StatusOr<GenerationResult> capped =
      Generate(*short_context.engine,
               Request({Prompts()[0], {1, 2, 3, 4, 5, 6, 7, 8}}, 1, 1.0, 0));
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(capped->groups[0][0].token_ids.size(), 16u);
  EXPECT_EQ(capped->groups[1][0].token_ids.size(), 12u);
}

// log_softmax(logits / T) of every completion position (T = 1 when greedy),
// from one forward pass over prompt + completion: [completion, vocab].
at::Tensor FullLogprobs(const model::Decoder& decoder,
                        const std::vector<int32_t>& prompt,
                        const std::vector<int32_t>& completion,
                        double temperature) {
  c10::InferenceMode inference;
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  ids.insert(ids.end(), completion.begin(), completion.end());
  absl::StatusOr<at::Tensor> hidden =
      decoder.Forward(at::tensor(ids, at::kLong).unsqueeze(0), {});
  EXPECT_TRUE(hidden.ok()) << hidden.status();
  const at::Tensor rows =
      (*hidden)[0].narrow(0, static_cast<int64_t>(prompt.size()) - 1,
                          static_cast<int64_t>(completion.size()));
  return at::log_softmax(decoder.Logits(rows).to(at::kFloat) /
                             (temperature > 0 ? temperature : 1.0),
                         1);
}

TEST(EngineTest, TopLogprobsAreTheMostLikelyTokensOfTheScoringPath) {
  for (const int64_t window : {1, 4}) {
    TestEngine t = MakeEngine(/*slots=*/8, 64, {}, window);
    ASSERT_NE(t.engine, nullptr);
    for (const double temperature : {0.0, 1.0}) {
      GenerationRequest request =
          Request({Prompts()[0], Prompts()[1]}, 2, temperature, 7);
      request.sampling.top_logprobs = 4;
      absl::StatusOr<GenerationResult> result = Generate(*t.engine, request);
      ASSERT_TRUE(result.ok()) << result.status();
      for (int p = 0; p < 2; ++p) {
        for (const Completion& c : result->groups[p]) {
          ASSERT_EQ(c.top_logprobs.size(), c.token_ids.size());
          const at::Tensor full =
              FullLogprobs(*t.decoder, Prompts()[p], c.token_ids, temperature);
          const auto [values, ids] = full.topk(4, 1);
          for (size_t i = 0; i < c.token_ids.size(); ++i) {
            ASSERT_EQ(c.top_logprobs[i].size(), 4u);
            for (int j = 0; j < 4; ++j) {
              EXPECT_EQ(c.top_logprobs[i][j].first, ids[i][j].item<int64_t>())
                  << "window " << window << " T " << temperature << " token "
                  << i << " rank " << j;
              EXPECT_NEAR(c.top_logprobs[i][j].second,
                          values[i][j].item<float>(), 1e-4);
            }
            if (temperature == 0) {
              EXPECT_EQ(c.top_logprobs[i][0].first, c.token_ids[i]);
              EXPECT_EQ(c.top_logprobs[i][0].second, c.logprobs[i]);
            }
          }
        }
      }
    }
    // Not asked for: none.
    absl::StatusOr<GenerationResult> plain =
        Generate(*t.engine, Request({Prompts()[0]}, 1, 1.0, 5));
    ASSERT_TRUE(plain.ok());
    EXPECT_TRUE(plain->groups[0][0].top_logprobs.empty());
  }
}

TEST(EngineTest, ProgressReportsEveryTokenThenEachFinishOnce) {
  TestEngine t = MakeEngine(/*slots=*/8);
  ASSERT_NE(t.engine, nullptr);
  GenerationRequest request = Request({Prompts()[0], Prompts()[1]}, 2, 1.0, 9);
  // Reported on the engine thread, before the result is delivered.
  std::vector<std::vector<int32_t>> seen(4);
  std::vector<int> finishes(4, 0);
  request.on_progress = [&](int prompt, int index, const Completion& c,
                            bool finished) {
    const int i = prompt * 2 + index;
    EXPECT_EQ(finishes[i], 0) << "a report after the finish";
    EXPECT_EQ(c.token_ids.size(), seen[i].size() + 1)
        << "one report per token, the finish with the last one";
    seen[i] = c.token_ids;
    if (finished) ++finishes[i];
  };
  absl::StatusOr<GenerationResult> result = Generate(*t.engine, request);
  ASSERT_TRUE(result.ok()) << result.status();
  for (int p = 0; p < 2; ++p) {
    for (int g = 0; g < 2; ++g) {
      EXPECT_EQ(finishes[p * 2 + g], 1);
      EXPECT_EQ(seen[p * 2 + g], result->groups[p][g].token_ids);
    }
  }
}

TEST(EngineTest, AGroupLargerThanTheKvBudgetIsQueuedInParts) {
  TestEngine t = MakeEngine(/*slots=*/2);
  ASSERT_NE(t.engine, nullptr);
  absl::StatusOr<GenerationResult> result =
      Generate(*t.engine, Request(Prompts(), 5, 1.0, 6));
  ASSERT_TRUE(result.ok()) << result.status();
  for (size_t p = 0; p < Prompts().size(); ++p) {
    ASSERT_EQ(result->groups[p].size(), 5u);
    for (const Completion& completion : result->groups[p]) {
      ExpectMatchesScoring(*t.decoder, Prompts()[p], completion, 1.0, nullptr,
                           "group part");
    }
  }
  // The parts' completions are the ones a roomy engine gives (seeds follow the
  // completion's place in the request, not the batch).
  TestEngine roomy = MakeEngine(/*slots=*/32);
  absl::StatusOr<GenerationResult> reference =
      Generate(*roomy.engine, Request(Prompts(), 5, 1.0, 6));
  ASSERT_TRUE(reference.ok());
  for (size_t p = 0; p < Prompts().size(); ++p) {
    for (size_t g = 0; g < 5; ++g) {
      EXPECT_EQ(result->groups[p][g].token_ids,
                reference->groups[p][g].token_ids);
    }
  }
}

TEST(EngineTest, RefusesBadRequestsWithAReason) {
  TestEngine t = MakeEngine(/*slots=*/4, /*max_model_len=*/32);
  ASSERT_NE(t.engine, nullptr);
  auto error = [&](GenerationRequest request) {
    absl::StatusOr<GenerationResult> result =
        Generate(*t.engine, std::move(request));
    EXPECT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << result.status();
    return std::string(result.status().message());
  };
  EXPECT_THAT(error(Request({}, 1, 1.0, 4)), HasSubstr("no prompts"));
  EXPECT_THAT(error(Request({{}}, 1, 1.0, 4)), HasSubstr("prompt 0 is empty"));
  EXPECT_THAT(error(Request({{1, 50}}, 1, 1.0, 4)),
              HasSubstr("id 50 is outside the vocabulary"));
  EXPECT_THAT(error(Request({{1, -1}}, 1, 1.0, 4)),
              HasSubstr("prompt 0, token 1"));
  EXPECT_THAT(error(Request({{1}}, 0, 1.0, 4)), HasSubstr("group_size 0"));
  EXPECT_THAT(error(Request({{1}}, 65, 1.0, 4)), HasSubstr("group_size 65"));
  EXPECT_THAT(
      error(Request(std::vector<std::vector<int32_t>>(2000, {1}), 64, 1.0, 4)),
      HasSubstr("at most 65536 per request"));
  EXPECT_THAT(error(Request({{1}}, 1, -0.5, 4)), HasSubstr("temperature"));
  EXPECT_THAT(error(Request({{1, 2, 3}}, 1, 1.0, 30)),
              HasSubstr("exceeds max_model_len 32"));
  EXPECT_THAT(error(Request({std::vector<int32_t>(32, 1)}, 1, 1.0, 0)),
              HasSubstr("no room for a completion"));
  GenerationRequest bad_top_p = Request({{1}}, 1, 1.0, 4);
  bad_top_p.sampling.top_p = 0;
  EXPECT_THAT(error(bad_top_p), HasSubstr("top_p"));
  bad_top_p.sampling.top_p = 1.5;
  EXPECT_THAT(error(bad_top_p), HasSubstr("top_p"));
  GenerationRequest stop_strings = Request({{1}}, 1, 1.0, 4);
  stop_strings.sampling.stop_strings = {"x"};
  EXPECT_THAT(error(stop_strings), HasSubstr("need a tokenizer"));
  GenerationRequest stop_ids = Request({{1}}, 1, 1.0, 4);
  stop_ids.sampling.stop_token_ids = {99};
  EXPECT_THAT(error(stop_ids), HasSubstr("stop token id 99"));
  // The engine still serves.
  EXPECT_TRUE(Generate(*t.engine, Request({{1}}, 1, 1.0, 4)).ok());
}

TEST(EngineTest, RefusesABudgetWithNoRoomForOneSequence) {
  prometheus::Registry registry;
  EngineOptions options;
  options.max_model_len = 64;
  options.kv_cache_bytes = 64 * kBytesPerPosition - 1;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(TinyDecoder(), nullptr, options, registry);
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(), HasSubstr("holds no sequence"));
}

TEST(EngineTest, CudaGraphsNeedAGpu) {
  prometheus::Registry registry;
  EngineOptions options;
  options.max_model_len = 64;
  options.kv_cache_bytes = 4 * 64 * kBytesPerPosition;
  options.cuda_graphs = true;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(TinyDecoder(), nullptr, options, registry);
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(), HasSubstr("CUDA graphs need"));
  options.cuda_graphs = false;
  options.decode_key_bucket = -1;
  EXPECT_FALSE(Engine::Create(TinyDecoder(), nullptr, options, registry).ok());
}

TEST(EngineTest, HotSwapUnderLoadNeverMixesAdapterVersions) {
  TestEngine t = MakeEngine(/*slots=*/6);
  ASSERT_NE(t.engine, nullptr);
  std::map<uint64_t, std::shared_ptr<const model::LoraAdapter>> adapters;
  for (uint64_t v = 1; v <= 5; ++v)
    adapters[v] = RandomAdapter(t.decoder->config(), {4, 8.0}, v);

  std::atomic<bool> done{false};
  std::vector<std::pair<GenerationRequest, absl::StatusOr<GenerationResult>>>
      results;
  std::mutex results_mu;
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 6; ++i) {
        GenerationRequest request =
            Request({Prompts()[(c + i) % 4], Prompts()[(c + i + 1) % 4]}, 2,
                    1.0, 6 + 3 * c, 100 * c + i);
        absl::StatusOr<GenerationResult> result = Generate(*t.engine, request);
        std::lock_guard<std::mutex> lock(results_mu);
        results.emplace_back(std::move(request), std::move(result));
      }
    });
  }
  std::vector<double> swaps;
  for (uint64_t v = 1; v <= 5; ++v) {
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
    absl::StatusOr<double> seconds = t.engine->LoadAdapter(adapters[v], v);
    ASSERT_TRUE(seconds.ok()) << seconds.status();
    swaps.push_back(*seconds);
  }
  for (std::thread& client : clients) client.join();
  done = true;

  std::set<uint64_t> versions_seen;
  ASSERT_EQ(results.size(), 18u);
  for (const auto& [request, result] : results) {
    ASSERT_TRUE(result.ok()) << result.status();
    for (size_t p = 0; p < request.prompts.size(); ++p) {
      for (const Completion& completion : result->groups[p]) {
        versions_seen.insert(completion.adapter_version);
        const model::LoraAdapter* adapter =
            completion.adapter_version == 0
                ? nullptr
                : adapters[completion.adapter_version].get();
        // Every token's log-prob is the one its reported version gives.
        ExpectMatchesScoring(
            *t.decoder, request.prompts[p], completion, 1.0, adapter,
            "version " + std::to_string(completion.adapter_version));
      }
    }
  }
  EXPECT_GE(versions_seen.size(), 2u);
  // Older versions are refused and keep the current one.
  absl::StatusOr<double> stale = t.engine->LoadAdapter(adapters[2], 2);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(t.engine->Snapshot().adapter_version, 5u);
}

TEST(EngineTest, SleepFreesTheCacheAndWakeRestoresIt) {
  TestEngine t = MakeEngine(/*slots=*/4);
  ASSERT_NE(t.engine, nullptr);
  const int64_t cache_bytes = t.engine->Snapshot().kv_cache_bytes;
  EXPECT_EQ(cache_bytes, 4 * 64 * kBytesPerPosition);
  absl::StatusOr<int64_t> freed = t.engine->Sleep(false);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(*freed, cache_bytes);
  EXPECT_EQ(*t.engine->Sleep(false), 0);  // idempotent
  EngineSnapshot snapshot = t.engine->Snapshot();
  EXPECT_EQ(snapshot.state, EngineState::kSleeping);
  EXPECT_EQ(snapshot.kv_cache_bytes, 0);

  absl::StatusOr<GenerationResult> refused =
      Generate(*t.engine, Request({{1, 2}}, 1, 1.0, 4));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  GenerationRequest waiting = Request({{1, 2}}, 2, 0.0, 4);
  waiting.wait_if_sleeping = true;
  std::future<absl::StatusOr<GenerationResult>> pending =
      SubmitAsync(*t.engine, waiting);
  EXPECT_EQ(pending.wait_for(std::chrono::milliseconds(200)),
            std::future_status::timeout);
  absl::StatusOr<int64_t> woken = t.engine->Wake();
  ASSERT_TRUE(woken.ok());
  EXPECT_EQ(*woken, cache_bytes);
  EXPECT_EQ(*t.engine->Wake(), cache_bytes);  // idempotent
  absl::StatusOr<GenerationResult> result = pending.get();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->queue_seconds, 0.15);
  ExpectMatchesScoring(*t.decoder, {1, 2}, result->groups[0][0], 0.0, nullptr,
                       "after wake");
}

TEST(EngineTest, SleepWithAbortEndsRunningCompletions) {
  TestEngine t = MakeEngine(/*slots=*/4, /*max_model_len=*/4096);
  ASSERT_NE(t.engine, nullptr);
  std::future<absl::StatusOr<GenerationResult>> running =
      SubmitAsync(*t.engine, Request({{1, 2, 3}}, 2, 1.0, 4000));
  while (t.engine->Snapshot().running_sequences == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(t.engine->Sleep(/*abort_running=*/true).ok());
  absl::StatusOr<GenerationResult> result = running.get();
  ASSERT_TRUE(result.ok()) << result.status();
  for (const Completion& completion : result->groups[0]) {
    EXPECT_EQ(completion.finish_reason, FinishReason::kAbort);
    EXPECT_LT(completion.token_ids.size(), 4000u);
    EXPECT_EQ(completion.token_ids.size(), completion.logprobs.size());
  }
  ASSERT_TRUE(t.engine->Wake().ok());
}

TEST(EngineTest, SleepWithAbortAlsoEndsTheUnstartedRestOfARequest) {
  // Two slots, two prompts x G=2: prompt 1's completions wait behind prompt
  // 0's.
  TestEngine t = MakeEngine(/*slots=*/2, /*max_model_len=*/4096);
  ASSERT_NE(t.engine, nullptr);
  std::future<absl::StatusOr<GenerationResult>> partly =
      SubmitAsync(*t.engine, Request({{1, 2, 3}, {4, 5}}, 2, 1.0, 4000));
  // Queued behind it and not willing to wait for a Wake: refused once asleep.
  std::future<absl::StatusOr<GenerationResult>> queued =
      SubmitAsync(*t.engine, Request({{6}}, 1, 1.0, 5));
  while (t.engine->Snapshot().running_sequences == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(t.engine->Sleep(/*abort_running=*/true).ok());
  ASSERT_EQ(partly.wait_for(std::chrono::seconds(10)),
            std::future_status::ready);
  absl::StatusOr<GenerationResult> result = partly.get();
  ASSERT_TRUE(result.ok()) << result.status();
  for (const auto& group : result->groups) {
    for (const Completion& completion : group) {
      EXPECT_EQ(completion.finish_reason, FinishReason::kAbort);
    }
  }
  EXPECT_TRUE(result->groups[1][0].token_ids.empty());
  EXPECT_EQ(queued.get().status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(t.engine->Wake().ok());
}

TEST(EngineTest, AGroupRunInPartsKeepsOneAdapterVersion) {
  TestEngine t = MakeEngine(/*slots=*/2);
  ASSERT_NE(t.engine, nullptr);
  ASSERT_TRUE(
      t.engine->LoadAdapter(RandomAdapter(t.decoder->config(), {4, 8.0}, 1), 1)
          .ok());
  // Eight completions through two slots: four parts. A swap asked for after
  // the first part waits for the rest of the request.
  std::future<absl::StatusOr<GenerationResult>> running =
      SubmitAsync(*t.engine, Request({{1, 2, 3}}, 8, 1.0, 30));
  while (t.engine->Snapshot().running_sequences == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(
      t.engine->LoadAdapter(RandomAdapter(t.decoder->config(), {4, 8.0}, 2), 2)
          .ok());
  absl::StatusOr<GenerationResult> result = running.get();
  ASSERT_TRUE(result.ok()) << result.status();
  for (const Completion& completion : result->groups[0]) {
    EXPECT_EQ(completion.adapter_version, 1u);
  }
  absl::StatusOr<GenerationResult> after =
      Generate(*t.engine, Request({{1, 2, 3}}, 1, 1.0, 3));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->groups[0][0].adapter_version, 2u);
}

TEST(EngineTest, KeptVersionsServeRequestsThatNameThem) {
  TestEngine t = MakeEngine(/*slots=*/4);
  ASSERT_NE(t.engine, nullptr);
  std::map<uint64_t, std::shared_ptr<const model::LoraAdapter>> adapters;
  for (uint64_t v = 1; v <= 3; ++v)
    adapters[v] = RandomAdapter(t.decoder->config(), {4, 8.0}, 10 + v);
  ASSERT_TRUE(t.engine->LoadAdapter(adapters[1], 1, /*keep_versions=*/2).ok());
  ASSERT_TRUE(t.engine->LoadAdapter(adapters[2], 2, /*keep_versions=*/2).ok());
  EXPECT_EQ(t.engine->Snapshot().resident_versions,
            (std::vector<uint64_t>{1, 2}));
  // Requests of both versions at once, and one naming none (the newest): each
  // runs with the adapter it asked for, none mixes versions.
  std::vector<std::pair<uint64_t, GenerationRequest>> asked;
  std::vector<std::future<absl::StatusOr<GenerationResult>>> pending;
  for (uint64_t v : {1, 2, 0, 1}) {
    GenerationRequest request =
        Request({Prompts()[v % 4], Prompts()[(v + 1) % 4]}, 3, 1.0, 8, 20 + v);
    request.adapter_version = v;
    pending.push_back(SubmitAsync(*t.engine, request));
    asked.emplace_back(v == 0 ? 2 : v, std::move(request));
  }
  for (size_t i = 0; i < pending.size(); ++i) {
    absl::StatusOr<GenerationResult> result = pending[i].get();
    ASSERT_TRUE(result.ok()) << result.status();
    const auto& [version, request] = asked[i];
    for (size_t p = 0; p < request.prompts.size(); ++p) {
      for (const Completion& completion : result->groups[p]) {
        EXPECT_EQ(completion.adapter_version, version);
        ExpectMatchesScoring(*t.decoder, request.prompts[p], completion, 1.0,
                             adapters[version].get(),
                             "version " + std::to_string(version));
      }
    }
  }
  // The same request of a kept version samples the same tokens again.
  GenerationRequest again = asked[0].second;
  absl::StatusOr<GenerationResult> first = Generate(*t.engine, again);
  absl::StatusOr<GenerationResult> second = Generate(*t.engine, again);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->groups[1][2].token_ids, second->groups[1][2].token_ids);

  // Version 3 keeping two: version 1 goes.
  ASSERT_TRUE(t.engine->LoadAdapter(adapters[3], 3, /*keep_versions=*/2).ok());
  EXPECT_EQ(t.engine->Snapshot().resident_versions,
            (std::vector<uint64_t>{2, 3}));
  GenerationRequest gone = Request({{1, 2}}, 1, 1.0, 3);
  gone.adapter_version = 1;
  absl::StatusOr<GenerationResult> refused = Generate(*t.engine, gone);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("adapter version 1 is not resident (resident: 2, 3)"));
  gone.adapter_version = 2;
  gone.disable_adapter = true;
  EXPECT_EQ(Generate(*t.engine, gone).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Keeping one (the default) leaves only the newest.
  ASSERT_TRUE(t.engine->LoadAdapter(adapters[1], 4).ok());
  EXPECT_EQ(t.engine->Snapshot().resident_versions, (std::vector<uint64_t>{4}));
}

TEST(EngineTest, CancellationFreesSequencesAtOnce) {
  TestEngine t = MakeEngine(/*slots=*/4, /*max_model_len=*/4096);
  ASSERT_NE(t.engine, nullptr);
  GenerationRequest request = Request({{1, 2, 3}}, 4, 1.0, 4000);
  std::shared_ptr<std::atomic<bool>> cancelled = request.cancelled;
  std::future<absl::StatusOr<GenerationResult>> running =
      SubmitAsync(*t.engine, request);
  // And one that waits behind it.
  GenerationRequest queued = Request({{4, 5}}, 4, 1.0, 4000);
  std::shared_ptr<std::atomic<bool>> queued_cancelled = queued.cancelled;
  std::future<absl::StatusOr<GenerationResult>> waiting =
      SubmitAsync(*t.engine, queued);
  while (t.engine->Snapshot().running_sequences == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  cancelled->store(true);
  queued_cancelled->store(true);
  EXPECT_EQ(running.get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(waiting.get().status().code(), absl::StatusCode::kCancelled);
  for (int i = 0; i < 200 && t.engine->Snapshot().running_sequences != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(t.engine->Snapshot().running_sequences, 0);
  EXPECT_EQ(t.engine->Snapshot().waiting_sequences, 0);
  EXPECT_TRUE(Generate(*t.engine, Request({{1}}, 1, 1.0, 3)).ok());
}

TEST(EngineTest, ReportsMetrics) {
  TestEngine t = MakeEngine(/*slots=*/4);
  ASSERT_NE(t.engine, nullptr);
  ASSERT_TRUE(Generate(*t.engine, Request(Prompts(), 2, 1.0, 5)).ok());
  // Metrics are published after the step that finishes the request.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::string text =
      prometheus::TextSerializer().Serialize(t.registry->Collect());
  EXPECT_THAT(text, HasSubstr("microrl_rollout_generated_tokens_total 40"));
  EXPECT_THAT(text, HasSubstr("microrl_rollout_prompt_tokens_total 16"));
  EXPECT_THAT(
      text,
      HasSubstr(
          "microrl_rollout_completions_total{finish_reason=\"length\"} 8"));
  EXPECT_THAT(text, HasSubstr("microrl_rollout_decode_step_seconds_count"));
  EXPECT_THAT(text, HasSubstr("microrl_rollout_running_sequences 0"));
  EXPECT_THAT(text, HasSubstr("microrl_rollout_kv_cache_bytes 65536"));
}

}  // namespace
}  // namespace microrl::rollout
