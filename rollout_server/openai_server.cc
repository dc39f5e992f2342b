#include "rollout_server/openai_server.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace microrl::rollout {
namespace {

using nlohmann::json;

constexpr int kMaxJsonDepth = 64;

// An error as OpenAI's API answers it, with its HTTP status.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;
  std::string code;
};

json ErrorBody(const ApiError& e) {
  json error = {{"message", e.message},
                {"type", e.type},
                {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return json{{"error", error}};
}

ApiError BadField(const std::string& param, const std::string& message) {
  return {400, message, "invalid_request_error", param, ""};
}

// The engine's refusals as HTTP errors.
ApiError FromStatus(const absl::Status& status) {
  const std::string message(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return {400, message, "invalid_request_error", "", ""};
    case absl::StatusCode::kResourceExhausted:
      return {429, message, "rate_limit_error", "", "queue_full"};
    case absl::StatusCode::kUnavailable:
      return {503, message, "server_error", "", "unavailable"};
    case absl::StatusCode::kFailedPrecondition:
      return {404, message, "invalid_request_error", "model",
              "model_not_found"};
    case absl::StatusCode::kCancelled:
      return {499, message, "server_error", "", "cancelled"};
    default:
      return {500, message, "server_error", "", ""};
  }
}

void Reply(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  if (e.http_status == 503) res.set_header("Retry-After", "5");
  res.set_content(ErrorBody(e).dump(), "application/json");
}

const char* FinishName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "stop";
}

// Reads an optional number field; BadField unless a number in [lo, hi].
std::optional<ApiError> ReadNumber(const json& body, const char* key, double lo,
                                   double hi, double* out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_number()) {
    return BadField(key, absl::StrCat("'", key, "' must be a number"));
  }
  const double value = body[key].get<double>();
  if (!(value >= lo && value <= hi)) {
    return BadField(key, absl::StrCat("'", key, "' must be in [", lo, ", ", hi,
                                      "]; got ", value));
  }
  *out = value;
  return std::nullopt;
}

std::optional<ApiError> ReadInteger(const json& body, const char* key,
                                    int64_t lo, int64_t hi, int64_t* out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_number_integer()) {
    return BadField(key, absl::StrCat("'", key, "' must be an integer"));
  }
  const int64_t value = body[key].get<int64_t>();
  if (value < lo || value > hi) {
    return BadField(key, absl::StrCat("'", key, "' must be in [", lo, ", ", hi,
                                      "]; got ", value));
  }
  *out = value;
  return std::nullopt;
}

// What one request asked, parsed and checked.
struct Parsed {
  bool chat = false;
  std::string model;
  GenerationRequest request;
  bool stream = false;
  bool logprobs = false;
  bool echo_usage_in_stream = false;
  size_t longest_stop = 0;
};

// The sampled tokens' log-probs [from, to) of `c` in OpenAI's chat or
// completions shape, with the top alternatives when asked for.
json Logprobs(const tokenizer::Tokenizer* tok, const Completion& c, bool chat,
              size_t from, size_t to, size_t text_offset = 0) {
  // -inf (a token outside top-k/top-p at temperature 0) as vLLM writes it.
  auto value = [&](size_t i) { return std::max(c.logprobs[i], -9999.0f); };
  auto token_text = [&](int32_t id) {
    return tok != nullptr ? tok->Decode({id}) : absl::StrCat(id);
  };
  auto token_bytes = [&](int32_t id) {
    const std::string b = tok != nullptr ? tok->TokenBytes(id) : "";
    return std::vector<uint8_t>(b.begin(), b.end());
  };
  if (chat) {
    json content = json::array();
    for (size_t i = from; i < to; ++i) {
      json alternatives = json::array();
      if (i < c.top_logprobs.size()) {
        for (const auto& [id, logprob] : c.top_logprobs[i]) {
          alternatives.push_back({{"token", token_text(id)},
                                  {"logprob", std::max(logprob, -9999.0f)},
                                  {"bytes", token_bytes(id)}});
        }
      }
      content.push_back({{"token", token_text(c.token_ids[i])},
                         {"logprob", value(i)},
                         {"bytes", token_bytes(c.token_ids[i])},
                         {"top_logprobs", alternatives}});
    }
    return json{{"content", content}};
  }
  json tokens = json::array(), values = json::array(), offsets = json::array();
  json tops = c.top_logprobs.empty() ? json(nullptr) : json::array();
  for (size_t i = from; i < to; ++i) {
    const std::string text = token_text(c.token_ids[i]);
    offsets.push_back(text_offset);
    text_offset += text.size();
    tokens.push_back(text);
    values.push_back(value(i));
    if (i < c.top_logprobs.size()) {
      // {token text: log-prob}, as OpenAI's completions write it (tokens
      // whose texts coincide keep the likelier one's).
      // The sampled token is always there (OpenAI's up to logprobs + 1).
      json alternatives = json::object({{text, value(i)}});
      for (const auto& [id, logprob] : c.top_logprobs[i]) {
        const std::string t = token_text(id);
        if (!alternatives.contains(t)) {
          alternatives[t] = std::max(logprob, -9999.0f);
        }
      }
      tops.push_back(alternatives);
    }
  }
  return json{{"tokens", tokens},
              {"token_logprobs", values},
              {"top_logprobs", tops},
              {"text_offset", offsets}};
}

json Usage(const Parsed& p, const GenerationResult& result) {
  int64_t prompt_tokens = 0, completion_tokens = 0;
  for (size_t i = 0; i < p.request.prompts.size(); ++i) {
    prompt_tokens += static_cast<int64_t>(p.request.prompts[i].size());
  }
  for (const auto& group : result.groups)
    for (const auto& c : group)
      completion_tokens += static_cast<int64_t>(c.token_ids.size());
  return json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens}};
}

}  // namespace

struct OpenAiServer::Impl {
  OpenAiServerOptions options;
  std::shared_ptr<Engine> engine;
  std::optional<tokenizer::ChatTemplate> chat_template;
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  std::atomic<uint64_t> next_id{1};
  std::atomic<bool> listen_returned{false};

  // The cancel flags of the requests being answered, so that Stop() ends
  // their generations instead of waiting for them.
  std::mutex in_flight_mu;
  std::set<std::shared_ptr<std::atomic<bool>>> in_flight;
  struct InFlight {
    InFlight(Impl* impl, std::shared_ptr<std::atomic<bool>> flag)
        : impl(impl), flag(std::move(flag)) {
      std::lock_guard<std::mutex> lock(impl->in_flight_mu);
      impl->in_flight.insert(this->flag);
    }
    ~InFlight() {
      std::lock_guard<std::mutex> lock(impl->in_flight_mu);
      impl->in_flight.erase(flag);
    }
    Impl* impl;
    std::shared_ptr<std::atomic<bool>> flag;
  };
  void CancelAll() {
    std::lock_guard<std::mutex> lock(in_flight_mu);
    for (const auto& flag : in_flight) flag->store(true);
  }

  bool Authorized(const httplib::Request& req) const {
    if (options.security.token.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    const std::string want = "Bearer " + options.security.token;
    // Constant-time comparison of equal-length strings.
    if (header.size() != want.size()) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < want.size(); ++i)
      diff |= static_cast<unsigned char>(header[i] ^ want[i]);
    return diff == 0;
  }

  std::vector<std::string> ModelNames() const {
    std::vector<std::string> names = {options.model_name};
    for (uint64_t v : engine->Snapshot().resident_versions)
      names.push_back(absl::StrCat(options.model_name, "@v", v));
    return names;
  }

  // The model a request names: the base (no adapter), or a resident version.
  std::optional<ApiError> ResolveModel(const std::string& name,
                                       GenerationRequest* request) const {
    if (name == options.model_name) {
      request->disable_adapter = true;
      return std::nullopt;
    }
    const std::string prefix = options.model_name + "@v";
    uint64_t version = 0;
    if (absl::StartsWith(name, prefix) &&
        absl::SimpleAtoi(name.substr(prefix.size()), &version) && version > 0) {
      const EngineSnapshot snapshot = engine->Snapshot();
      if (std::find(snapshot.resident_versions.begin(),
                    snapshot.resident_versions.end(),
                    version) != snapshot.resident_versions.end()) {
        request->adapter_version = version;
        return std::nullopt;
      }
    }
    return ApiError{404,
                    absl::StrCat("The model '", name,
                                 "' does not exist; GET /v1/models lists them"),
                    "invalid_request_error", "model", "model_not_found"};
  }

  std::optional<ApiError> Tokenize(const std::string& text,
                                   std::vector<int32_t>* ids) const {
    const tokenizer::Tokenizer* tok = engine->tokenizer();
    if (tok == nullptr) {
      return ApiError{400, "this server's model has no tokenizer.json",
                      "invalid_request_error", "", ""};
    }
    absl::StatusOr<std::vector<int32_t>> encoded = tok->EncodeChecked(text);
    if (!encoded.ok()) return FromStatus(encoded.status());
    *ids = *std::move(encoded);
    return std::nullopt;
  }

  std::optional<ApiError> Parse(const json& body, bool chat, Parsed* p) const {
    p->chat = chat;
    if (!body.is_object())
      return BadField("", "the body must be a JSON object");
    if (!body.contains("model") || !body["model"].is_string())
      return BadField("model", "'model' (a string) is required");
    p->model = body["model"].get<std::string>();
    if (auto e = ResolveModel(p->model, &p->request)) return e;

    if (chat) {
      if (!body.contains("messages") || !body["messages"].is_array() ||
          body["messages"].empty())
        return BadField("messages", "'messages' must be a non-empty array");
      for (const json& m : body["messages"]) {
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
          return BadField("messages", "each message needs a string 'role'");
        if (!m.contains("content") ||
            !(m["content"].is_string() || m["content"].is_null() ||
              m["content"].is_array()))
          return BadField("messages",
                          "each message's 'content' must be a string or a list "
                          "of text parts");
      }
      if (!chat_template.has_value()) {
        return BadField("messages",
                        "this model has no chat template "
                        "(tokenizer_config.json); use /v1/completions");
      }
      nlohmann::ordered_json messages = body["messages"];
      // Content as a list of parts: the text parts joined (no images here).
      for (auto& m : messages) {
        if (!m["content"].is_array()) continue;
        std::string text;
        for (const auto& part : m["content"]) {
          if (!part.is_object() || !part.contains("type") ||
              part["type"] != "text" || !part.contains("text") ||
              !part["text"].is_string()) {
            return BadField("messages",
                            "only text content parts ({\"type\": \"text\", "
                            "\"text\": ...}) are supported");
          }
          text += part["text"].get<std::string>();
        }
        m["content"] = text;
      }
      absl::StatusOr<std::string> text =
          chat_template->Render(messages, /*add_generation_prompt=*/true);
      if (!text.ok())
        return BadField("messages", std::string(text.status().message()));
      std::vector<int32_t> ids;
      if (auto e = Tokenize(*text, &ids)) return e;
      p->request.prompts.push_back(std::move(ids));
    } else {
      if (!body.contains("prompt"))
        return BadField("prompt", "'prompt' is required");
      const json& prompt = body["prompt"];
      auto add_text = [&](const json& t) -> std::optional<ApiError> {
        std::vector<int32_t> ids;
        if (auto e = Tokenize(t.get<std::string>(), &ids)) return e;
        p->request.prompts.push_back(std::move(ids));
        return std::nullopt;
      };
      auto is_ids = [](const json& v) {
        return v.is_array() && !v.empty() &&
               std::all_of(v.begin(), v.end(), [](const json& x) {
                 // In int32's range (the vocabulary is checked
                 // later), so no id wraps into another.
                 return x.is_number_integer() &&
                        x.get<int64_t>() >= INT32_MIN &&
                        x.get<int64_t>() <= INT32_MAX;
               });
      };
      if (prompt.is_string()) {
        if (auto e = add_text(prompt)) return e;
      } else if (is_ids(prompt)) {
        p->request.prompts.push_back(prompt.get<std::vector<int32_t>>());
      } else if (prompt.is_array() && !prompt.empty()) {
        for (const json& item : prompt) {
          if (item.is_string()) {
            if (auto e = add_text(item)) return e;
          } else if (is_ids(item)) {
            p->request.prompts.push_back(item.get<std::vector<int32_t>>());
          } else {
            return BadField("prompt",
                            "'prompt' must be a string, a list of strings, "
                            "token ids or lists of token ids");
          }
        }
      } else {
        return BadField("prompt",
                        "'prompt' must be a string, a list of strings, token "
                        "ids or lists of token ids");
      }
    }
    for (const auto& ids : p->request.prompts) {
      if (ids.empty()) return BadField("prompt", "a prompt has no tokens");
    }

    // Fields this server does not implement are refused when they would
    // change the answer, rather than silently ignored.
    for (const char* key :
         {"presence_penalty", "frequency_penalty", "repetition_penalty"}) {
      if (body.contains(key) && !body[key].is_null() &&
          !(body[key].is_number() &&
            body[key].get<double>() ==
                (absl::string_view(key) == "repetition_penalty" ? 1.0 : 0.0))) {
        return BadField(key, absl::StrCat("'", key, "' is not supported"));
      }
    }
    for (const char* key : {"logit_bias", "tools", "functions", "suffix"}) {
      if (body.contains(key) && !body[key].is_null() &&
          !(body[key].is_object() && body[key].empty()) &&
          !(body[key].is_string() && body[key].get<std::string>().empty()) &&
          !(body[key].is_array() && body[key].empty())) {
        return BadField(key, absl::StrCat("'", key, "' is not supported"));
      }
    }
    if (body.contains("echo") && body["echo"].is_boolean() &&
        body["echo"].get<bool>()) {
      return BadField("echo", "'echo' is not supported");
    }
    if (body.contains("best_of") && !body["best_of"].is_null()) {
      const int64_t n = body.contains("n") && body["n"].is_number_integer()
                            ? body["n"].get<int64_t>()
                            : 1;
      if (!body["best_of"].is_number_integer() ||
          body["best_of"].get<int64_t>() != n) {
        return BadField("best_of", "'best_of' other than n is not supported");
      }
    }
    if (body.contains("response_format") &&
        body["response_format"].is_object() &&
        body["response_format"].contains("type") &&
        body["response_format"]["type"] != "text") {
      return BadField("response_format",
                      "only the 'text' response format is supported");
    }
    SamplingConfig& s = p->request.sampling;
    s.temperature = 1.0;
    if (auto e = ReadNumber(body, "temperature", 0, 2, &s.temperature))
      return e;
    if (auto e = ReadNumber(body, "top_p", 0, 1, &s.top_p)) return e;
    if (s.top_p <= 0) return BadField("top_p", "'top_p' must be above 0");
    if (auto e = ReadInteger(body, "top_k", -1, 1 << 20, &s.top_k)) return e;
    if (s.top_k < 0) s.top_k = 0;        // -1: no limit, as vLLM
    int64_t max_tokens = chat ? 0 : 16;  // OpenAI's completions default: 16
    const char* max_key = chat && body.contains("max_completion_tokens") &&
                                  !body["max_completion_tokens"].is_null()
                              ? "max_completion_tokens"
                              : "max_tokens";
    if (auto e = ReadInteger(body, max_key, 1, int64_t{1} << 30, &max_tokens))
      return e;
    // 0 (chat without a limit): the engine's default, capped by the context.
    s.max_tokens = max_tokens;
    int64_t n = 1;
    if (auto e = ReadInteger(body, "n", 1, 1024, &n)) return e;
    p->request.group_size = static_cast<int>(n);
    if (body.contains("seed") && !body["seed"].is_null()) {
      if (!body["seed"].is_number_integer())
        return BadField("seed", "'seed' must be an integer");
      s.seed = static_cast<uint64_t>(body["seed"].get<int64_t>());
    }
    if (body.contains("stop") && !body["stop"].is_null()) {
      const json& stop = body["stop"];
      if (stop.is_string()) {
        s.stop_strings.push_back(stop.get<std::string>());
      } else if (stop.is_array() && stop.size() <= 16) {
        for (const json& x : stop) {
          if (!x.is_string()) return BadField("stop", "'stop' must be strings");
          s.stop_strings.push_back(x.get<std::string>());
        }
      } else {
        return BadField("stop", "'stop' must be a string or up to 16 strings");
      }
      for (const auto& x : s.stop_strings) {
        if (x.empty()) return BadField("stop", "a stop string is empty");
        p->longest_stop = std::max(p->longest_stop, x.size());
      }
    }
    if (body.contains("stream") && !body["stream"].is_null()) {
      if (!body["stream"].is_boolean())
        return BadField("stream", "'stream' must be a boolean");
      p->stream = body["stream"].get<bool>();
    }
    if (body.contains("stream_options") && !body["stream_options"].is_null()) {
      const json& o = body["stream_options"];
      if (!o.is_object() ||
          (o.contains("include_usage") && !o["include_usage"].is_boolean())) {
        return BadField("stream_options",
                        "'stream_options' must be {\"include_usage\": bool}");
      }
      p->echo_usage_in_stream = o.value("include_usage", false);
    }
    // Log-probs of the sampled tokens, and of the most likely alternatives at
    // each position: chat's top_logprobs (0-20, with logprobs: true), or
    // completions' logprobs (0-5).
    int64_t top = 0;
    if (chat) {
      if (body.contains("logprobs") && !body["logprobs"].is_null()) {
        if (!body["logprobs"].is_boolean())
          return BadField("logprobs", "'logprobs' must be a boolean");
        p->logprobs = body["logprobs"].get<bool>();
      }
      if (auto e = ReadInteger(body, "top_logprobs", 0, kMaxTopLogprobs, &top))
        return e;
      if (top > 0 && !p->logprobs) {
        return BadField("top_logprobs", "top_logprobs needs 'logprobs': true");
      }
    } else if (body.contains("logprobs") && !body["logprobs"].is_null()) {
      if (auto e = ReadInteger(body, "logprobs", 0, 5, &top)) return e;
      p->logprobs = true;
    }
    s.top_logprobs = static_cast<int>(top);
    if (absl::Status valid = engine->Validate(p->request); !valid.ok()) {
      ApiError e = FromStatus(valid);
      if (e.http_status == 429) e.http_status = 400;  // can never fit
      return e;
    }
    return std::nullopt;
  }

  json Whole(const Parsed& p, const GenerationResult& result,
             const std::string& id, int64_t created) const {
    json choices = json::array();
    int index = 0;
    for (const auto& group : result.groups) {
      for (const auto& c : group) {
        json choice = {{"index", index++},
                       {"finish_reason", FinishName(c.finish_reason)}};
        json lp = p.logprobs ? Logprobs(engine->tokenizer(), c, p.chat, 0,
                                        c.token_ids.size())
                             : json(nullptr);
        if (p.chat) {
          choice["message"] = {{"role", "assistant"}, {"content", c.text}};
        } else {
          choice["text"] = c.text;
        }
        choice["logprobs"] = lp;
        choices.push_back(std::move(choice));
      }
    }
    return json{{"id", id},
                {"object", p.chat ? "chat.completion" : "text_completion"},
                {"created", created},
                {"model", p.model},
                {"choices", choices},
                {"usage", Usage(p, result)}};
  }

  void Handle(const httplib::Request& req, httplib::Response& res, bool chat) {
    if (!Authorized(req)) {
      res.set_header("WWW-Authenticate", "Bearer");
      return Reply(res,
                   {401, "a valid 'Authorization: Bearer <token>' is needed",
                    "authentication_error", "", "invalid_api_key"});
    }
    // Nesting is bounded: rendering a chat template walks values recursively.
    bool too_deep = false;
    json body = json::parse(
        req.body,
        [&too_deep](int depth, json::parse_event_t, json&) {
          if (depth > kMaxJsonDepth) too_deep = true;
          return !too_deep;
        },
        /*allow_exceptions=*/false);
    if (too_deep) {
      return Reply(res, BadField("", absl::StrCat("the body nests deeper than ",
                                                  kMaxJsonDepth, " levels")));
    }
    if (body.is_discarded()) {
      return Reply(res, BadField("", "the body is not valid JSON"));
    }
    auto parsed = std::make_shared<Parsed>();
    if (auto e = Parse(body, chat, parsed.get())) return Reply(res, *e);
    const std::string id =
        absl::StrCat(chat ? "chatcmpl-" : "cmpl-", next_id.fetch_add(1));
    const int64_t created = absl::ToUnixSeconds(absl::Now());
    if (!parsed->stream) {
      std::promise<absl::StatusOr<GenerationResult>> promise;
      std::future<absl::StatusOr<GenerationResult>> future =
          promise.get_future();
      InFlight in_flight(this, parsed->request.cancelled);
      engine->Submit(parsed->request,
                     [&promise](absl::StatusOr<GenerationResult> r) {
                       promise.set_value(std::move(r));
                     });
      absl::StatusOr<GenerationResult> result = future.get();
      if (!result.ok()) return Reply(res, FromStatus(result.status()));
      res.status = 200;
      res.set_content(Whole(*parsed, *result, id, created).dump(),
                      "application/json");
      return;
    }
    Stream(parsed, id, created, res);
  }

  // Server-sent events: one chunk per new piece of text of each choice as the
  // engine produces it, then each choice's finish, then [DONE].
  struct StreamState {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::string> events;
    bool done = false;
    absl::Status refused;  // an immediate refusal by Submit
    std::vector<size_t> sent_text, sent_tokens;
  };

  // One on_progress report of a stream: the completion's new text (up to where
  // a stop string could still begin) as a chunk; the rest with the finish.
  template <typename Chunk>
  static void Report(const tokenizer::Tokenizer* tok, StreamState& state,
                     const Parsed& p, const Chunk& chunk, int group,
                     size_t holdback, int prompt, int sample,
                     const Completion& c, bool finished) {
    const size_t index = static_cast<size_t>(prompt) * group + sample;
    std::lock_guard<std::mutex> lock(state.mu);
    size_t& sent = state.sent_text[index];
    size_t& sent_tok = state.sent_tokens[index];
    size_t upto = c.text.size();
    if (!finished) upto = upto > holdback ? upto - holdback : 0;
    // Never cut a UTF-8 character: back off continuation bytes.
    while (!finished && upto > sent && upto < c.text.size() &&
           (static_cast<unsigned char>(c.text[upto]) & 0xC0) == 0x80) {
      --upto;
    }
    const size_t tokens = c.token_ids.size();
    if (upto <= sent && !finished) return;
    const std::string piece =
        upto > sent ? c.text.substr(sent, upto - sent) : "";
    json lp = p.logprobs ? Logprobs(tok, c, p.chat, sent_tok, tokens, sent)
                         : json(nullptr);
    sent = std::max(sent, upto);
    sent_tok = tokens;
    json finish = finished ? json(FinishName(c.finish_reason)) : json(nullptr);
    state.events.push_back(
        "data: " + chunk(static_cast<int>(index), piece, lp, finish).dump() +
        "\n\n");
    state.cv.notify_all();
  }

  void Stream(std::shared_ptr<Parsed> p, const std::string& id, int64_t created,
              httplib::Response& res) {
    // Refusals known now get their HTTP status; later ones (a Sleep coming in
    // between) arrive as an error event in the stream.
    if (engine->Snapshot().state == EngineState::kSleeping) {
      return Reply(res, FromStatus(absl::UnavailableError(
                            "the rollout server is sleeping (time-shared with "
                            "the learner's update); retry shortly")));
    }
    auto state = std::make_shared<StreamState>();
    const int group = p->request.group_size;
    const size_t choices = p->request.prompts.size() * group;
    state->sent_text.assign(choices, 0);
    state->sent_tokens.assign(choices, 0);
    const bool chat = p->chat;
    auto cancelled = p->request.cancelled;
    const std::string object =
        chat ? "chat.completion.chunk" : "text_completion";
    auto chunk = [=](int index, const std::string& text, const json& lp,
                     const json& finish) {
      json choice = {{"index", index}, {"finish_reason", finish}};
      if (chat) {
        choice["delta"] = {{"content", text}};
      } else {
        choice["text"] = text;
      }
      choice["logprobs"] = lp;
      return json{{"id", id},
                  {"object", object},
                  {"created", created},
                  {"model", p->model},
                  {"choices", json::array({choice})}};
    };
    // The first chunk of a chat stream names the role.
    if (chat) {
      for (size_t i = 0; i < choices; ++i) {
        json first = chunk(static_cast<int>(i), "", nullptr, nullptr);
        first["choices"][0]["delta"] = {{"role", "assistant"}, {"content", ""}};
        state->events.push_back("data: " + first.dump() + "\n\n");
      }
    }
    GenerationRequest request = p->request;
    const size_t holdback = p->longest_stop > 0 ? p->longest_stop - 1 : 0;
    // The engine owns the tokenizer and outlives its requests.
    const tokenizer::Tokenizer* tok = engine->tokenizer();
    request.on_progress = [tok, state, p, chunk, group, holdback](
                              int prompt, int sample, const Completion& c,
                              bool finished) noexcept {
      // Nothing may escape into the engine's decode step (it would fail every
      // running request): a report that cannot be made ends this stream.
      try {
        Report(tok, *state, *p, chunk, group, holdback, prompt, sample, c,
               finished);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(state->mu);
        p->request.cancelled->store(true);
        state->events.push_back(
            "data: " +
            ErrorBody({500, e.what(), "server_error", "", ""}).dump() + "\n\n");
        state->cv.notify_all();
      }
    };
    // An immediate refusal (queue full, stopping) runs `done` on this thread:
    // it gets its HTTP status instead of a stream.
    const std::thread::id caller = std::this_thread::get_id();
    auto usage_p = p;
    engine->Submit(
        std::move(request), [state, usage_p, id, created, object,
                             caller](absl::StatusOr<GenerationResult> result) {
          std::lock_guard<std::mutex> lock(state->mu);
          if (!result.ok() && std::this_thread::get_id() == caller) {
            state->refused = result.status();
            state->done = true;
            return;
          }
          if (!result.ok()) {
            state->events.push_back(
                "data: " + ErrorBody(FromStatus(result.status())).dump() +
                "\n\n");
          } else if (usage_p->echo_usage_in_stream) {
            json last = {{"id", id},
                         {"object", object},
                         {"created", created},
                         {"model", usage_p->model},
                         {"choices", json::array()},
                         {"usage", Usage(*usage_p, *result)}};
            state->events.push_back("data: " + last.dump() + "\n\n");
          }
          state->events.push_back("data: [DONE]\n\n");
          state->done = true;
          state->cv.notify_all();
        });
    {
      std::lock_guard<std::mutex> lock(state->mu);
      if (!state->refused.ok()) return Reply(res, FromStatus(state->refused));
    }
    auto in_flight = std::make_shared<InFlight>(this, cancelled);
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [state, cancelled](size_t, httplib::DataSink& sink) {
          std::unique_lock<std::mutex> lock(state->mu);
          state->cv.wait_for(lock, std::chrono::seconds(1), [&] {
            return !state->events.empty() || state->done;
          });
          while (!state->events.empty()) {
            std::string event = std::move(state->events.front());
            state->events.pop_front();
            lock.unlock();
            const bool ok = sink.write(event.data(), event.size());
            lock.lock();
            if (!ok) {
              cancelled->store(true);
              return false;
            }
          }
          if (state->done) {
            sink.done();
          }
          return true;
        },
        [cancelled, state, in_flight](bool success) {
          // The client went away before the end: free its sequences.
          if (!success) cancelled->store(true);
          std::lock_guard<std::mutex> lock(state->mu);
          if (!state->done) cancelled->store(true);
        });
  }
};

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::Start(
    const OpenAiServerOptions& options, std::shared_ptr<Engine> engine) {
  if (engine == nullptr) {
    return absl::FailedPreconditionError(
        "--openai_port needs a model (--model)");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->engine = std::move(engine);
  const std::string config = options.model_dir + "/tokenizer_config.json";
  if (std::filesystem::exists(config)) {
    absl::StatusOr<tokenizer::ChatTemplate> chat =
        tokenizer::ChatTemplate::FromTokenizerConfig(config);
    if (chat.ok()) {
      impl->chat_template = *std::move(chat);
    } else {
      MRL_LOG(WARNING) << "no chat template for /v1/chat/completions: "
                       << chat.status();
    }
  }
  const rpc::ServerSecurity& sec = options.security;
  if (!sec.tls_cert_file.empty()) {
    auto ssl = std::make_unique<httplib::SSLServer>(
        sec.tls_cert_file.c_str(), sec.tls_key_file.c_str(),
        sec.tls_client_ca_file.empty() ? nullptr
                                       : sec.tls_client_ca_file.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--openai_port: cannot use the TLS certificate ",
                       sec.tls_cert_file, " and key ", sec.tls_key_file));
    }
    impl->server = std::move(ssl);
  } else {
    impl->server = std::make_unique<httplib::Server>();
  }
  httplib::Server& server = *impl->server;
  const int threads = std::max(1, options.threads);
  server.new_task_queue = [threads] {
    return new httplib::ThreadPool(threads);
  };
  server.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  server.set_read_timeout(30, 0);
  server.set_write_timeout(30, 0);
  server.set_keep_alive_max_count(100);
  Impl* raw = impl.get();
  server.Get(
      "/v1/models", [raw](const httplib::Request& req, httplib::Response& res) {
        if (!raw->Authorized(req)) {
          return Reply(
              res, {401, "a valid 'Authorization: Bearer <token>' is needed",
                    "authentication_error", "", "invalid_api_key"});
        }
        json data = json::array();
        for (const std::string& name : raw->ModelNames()) {
          data.push_back({{"id", name},
                          {"object", "model"},
                          {"created", 0},
                          {"owned_by", "microrl"}});
        }
        res.set_content(json{{"object", "list"}, {"data", data}}.dump(),
                        "application/json");
      });
  server.Post("/v1/completions",
              [raw](const httplib::Request& req, httplib::Response& res) {
                raw->Handle(req, res, false);
              });
  server.Post("/v1/chat/completions",
              [raw](const httplib::Request& req, httplib::Response& res) {
                raw->Handle(req, res, true);
              });
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError e{res.status, absl::StrCat("HTTP ", res.status),
               "invalid_request_error", "", ""};
    if (res.status == 404) e.message = "no such endpoint";
    if (res.status == 413) e.message = "the request body is too large";
    res.set_content(ErrorBody(e).dump(), "application/json");
  });
  server.set_exception_handler([](const httplib::Request&,
                                  httplib::Response& res,
                                  std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    Reply(res, {500, what, "server_error", "", ""});
  });
  const int port =
      options.port == 0
          ? server.bind_to_any_port(options.host.c_str())
          : (server.bind_to_port(options.host.c_str(), options.port)
                 ? options.port
                 : -1);
  if (port < 0) {
    return absl::UnavailableError(absl::StrCat(
        "--openai_port: cannot bind ", options.host, ":", options.port));
  }
  std::unique_ptr<OpenAiServer> result(new OpenAiServer());
  result->port_ = port;
  impl->thread = std::thread([raw] {
    raw->server->listen_after_bind();
    raw->listen_returned = true;
  });
  // stop() is a no-op until the server runs: wait for it, so that a Stop()
  // right after Start() cannot hang.
  while (!raw->server->is_running() && !raw->listen_returned) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  result->impl_ = std::move(impl);
  MRL_LOG(INFO) << "OpenAI-compatible endpoint on http"
                << (sec.tls_cert_file.empty() ? "" : "s") << "://"
                << options.host << ":" << port << "/v1";
  return result;
}

void OpenAiServer::Stop() {
  if (impl_ == nullptr || impl_->server == nullptr) return;
  impl_->CancelAll();  // running generations end at their next step
  impl_->server->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

OpenAiServer::~OpenAiServer() { Stop(); }

}  // namespace microrl::rollout
