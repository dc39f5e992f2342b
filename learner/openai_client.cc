#include "learner/openai_client.h"

#include <csignal>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace microrl::learner {
namespace {

using nlohmann::json;

absl::Status HttpError(int status, const std::string& what) {
  switch (status) {
    case 400:
    case 413:
    case 422:
      return absl::InvalidArgumentError(what);
    case 401:
    case 403:
      return absl::UnauthenticatedError(what);
    case 404:
      return absl::NotFoundError(what);
    case 429:
      return absl::ResourceExhaustedError(what);
    case 503:
      return absl::UnavailableError(what);
    default:
      return absl::InternalError(what);
  }
}

}  // namespace

OpenAiClient::OpenAiClient(const OpenAiClientOptions& options)
    : options_(options) {}

OpenAiClient::~OpenAiClient() = default;

absl::StatusOr<std::unique_ptr<OpenAiClient>> OpenAiClient::Create(
    const OpenAiClientOptions& options) {
  // scheme://host[:port][/prefix], checked here: httplib would take a
  // malformed one as a host name, and throws on a port past int.
  const std::string& url = options.base_url;
  auto refuse = [&url](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--openai_base_url: '", url, "' ", why,
                     " (e.g. http://127.0.0.1:8000/v1)"));
  };
  std::string scheme;
  if (absl::StartsWith(url, "http://")) {
    scheme = "http";
  } else if (absl::StartsWith(url, "https://")) {
    scheme = "https";
  } else {
    return refuse("is not an http:// or https:// URL");
  }
  const size_t authority_start = scheme.size() + 3;
  const size_t path_start = url.find('/', authority_start);
  const std::string authority =
      url.substr(authority_start, path_start == std::string::npos
                                      ? std::string::npos
                                      : path_start - authority_start);
  std::string prefix =
      path_start == std::string::npos ? "" : url.substr(path_start);
  if (prefix.find_first_of("?#") != std::string::npos) {
    return refuse("has a query or fragment");
  }
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (authority.empty() || authority.find('@') != std::string::npos) {
    return refuse("names no host (or has user information)");
  }
  std::string host = authority;
  int port = scheme == "https" ? 443 : 80;
  const size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.back() != ']') {
    host = authority.substr(0, colon);
    if (!absl::SimpleAtoi(authority.substr(colon + 1), &port) || port < 1 ||
        port > 65535) {
      return refuse("has a bad port");
    }
  }
  if (host.empty()) return refuse("names no host");
  const std::string origin = absl::StrCat(scheme, "://", host, ":", port);
  // A server that drops the connection must not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<OpenAiClient> client(new OpenAiClient(options));
  client->path_prefix_ = prefix;
  client->http_ = std::make_unique<httplib::Client>(origin);
  if (!client->http_->is_valid()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--openai_base_url: cannot use '", url, "'"));
  }
  if (!options.tls_ca_file.empty()) {
    client->http_->set_ca_cert_path(options.tls_ca_file.c_str());
  }
  if (!options.api_key.empty()) {
    client->http_->set_bearer_token_auth(options.api_key.c_str());
  }
  const int64_t seconds = absl::ToInt64Seconds(options.timeout);
  client->http_->set_read_timeout(seconds, 0);
  client->http_->set_write_timeout(seconds, 0);
  client->http_->set_connection_timeout(10, 0);

  if (client->options_.model.empty()) {
    absl::StatusOr<std::string> body = client->Call("GET", "/models", "");
    if (!body.ok()) return body.status();
    const json models = json::parse(*body, nullptr, false);
    if (models.is_discarded() || !models.contains("data") ||
        !models["data"].is_array() || models["data"].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          url, "/models lists no model; name one with --openai_model"));
    }
    // The last listed: on a microrl server, the newest adapter version.
    const json& last = models["data"].back();
    if (!last.is_object() || !last.contains("id") || !last["id"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(url,
                       "/models lists a model without an id; name one with "
                       "--openai_model"));
    }
    client->options_.model = last["id"].get<std::string>();
  }
  return client;
}

absl::StatusOr<std::string> OpenAiClient::Call(const std::string& method,
                                               const std::string& path,
                                               const std::string& body) {
  const std::string full = path_prefix_ + path;
  for (int attempt = 0;; ++attempt) {
    httplib::Result result =
        method == "GET" ? http_->Get(full.c_str())
                        : http_->Post(full.c_str(), body, "application/json");
    if (!result) {
      // A refused or dropped connection is tried three times, 2 s apart.
      if (attempt < 3) {
        std::this_thread::sleep_for(std::chrono::seconds(2));
        continue;
      }
      return absl::UnavailableError(
          absl::StrCat(method, " ", options_.base_url, path, ": ",
                       httplib::to_string(result.error())));
    }
    if (result->status == 200) return result->body;
    if ((result->status == 429 || result->status == 503) &&
        attempt < options_.retries) {
      int wait = 5;
      if (result->has_header("Retry-After")) {
        int parsed = 0;
        if (absl::SimpleAtoi(result->get_header_value("Retry-After"),
                             &parsed) &&
            parsed >= 0 && parsed <= 600) {
          wait = parsed;
        }
      }
      std::this_thread::sleep_for(std::chrono::seconds(wait));
      continue;
    }
    std::string message = result->body.substr(0, 2000);
    const json error = json::parse(result->body, nullptr, false);
    if (!error.is_discarded() && error.is_object() && error.contains("error") &&
        error["error"].is_object() && error["error"].contains("message") &&
        error["error"]["message"].is_string()) {
      message = error["error"]["message"].get<std::string>();
    }
    return HttpError(result->status,
                     absl::StrCat(method, " ", options_.base_url, path,
                                  ": HTTP ", result->status, ": ", message));
  }
}

absl::StatusOr<std::vector<CompletionGroup>> OpenAiClient::Generate(
    const std::vector<PromptIds>& prompts, const GenerateParams& params) {
  std::string model = options_.model;
  if (params.disable_adapter) {
    if (options_.base_model.empty()) {
      return absl::InvalidArgumentError(
          "the base model over an OpenAI endpoint needs its name "
          "(--openai_base_model)");
    }
    model = options_.base_model;
  }
  if (params.adapter_version != 0 || params.min_adapter_version != 0) {
    return absl::InvalidArgumentError(
        "adapter versions cannot be asked for over an OpenAI endpoint; name "
        "the model instead (e.g. <name>@v<version> on a microrl server)");
  }
  std::vector<CompletionGroup> groups(prompts.size());
  if (prompts.empty()) return groups;
  // A microrl server's adapter models are named <name>@v<version>.
  uint64_t version = 0;
  if (const size_t at = model.rfind("@v"); at != std::string::npos) {
    if (!absl::SimpleAtoi(model.substr(at + 2), &version)) version = 0;
  }
  json ids = json::array();
  for (size_t p = 0; p < prompts.size(); ++p) {
    ids.push_back(prompts[p].ids);
    groups[p].prompt_token_ids = prompts[p].ids;
  }
  const int64_t n = std::max<int64_t>(1, params.group_size);
  json request = {{"model", model},
                  {"prompt", ids},
                  {"n", n},
                  {"temperature", params.temperature},
                  {"logprobs", 0}};
  if (params.top_p > 0) request["top_p"] = params.top_p;
  if (params.top_k > 0) request["top_k"] = params.top_k;
  if (params.max_tokens > 0) request["max_tokens"] = params.max_tokens;
  request["seed"] = params.seed + params.first_prompt_index;
  absl::StatusOr<std::string> body =
      Call("POST", "/completions", request.dump());
  if (!body.ok()) return body.status();
  const json answer = json::parse(*body, nullptr, false);
  const std::string where = absl::StrCat(options_.base_url, "/completions");
  if (answer.is_discarded() || !answer.contains("choices") ||
      !answer["choices"].is_array()) {
    return absl::InternalError(
        absl::StrCat(where, ": the answer has no list of choices"));
  }
  const size_t want = prompts.size() * static_cast<size_t>(n);
  if (answer["choices"].size() != want) {
    return absl::InternalError(
        absl::StrCat(where, ": ", answer["choices"].size(), " choices for ",
                     prompts.size(), " prompts x n=", n));
  }
  for (auto& group : groups) group.completions.resize(static_cast<size_t>(n));
  std::vector<bool> seen(want, false);
  for (size_t i = 0; i < want; ++i) {
    const json& choice = answer["choices"][i];
    if (!choice.is_object() || !choice.contains("text") ||
        !choice["text"].is_string()) {
      return absl::InternalError(
          absl::StrCat(where, ": choice ", i, " has no text"));
    }
    size_t index = i;
    if (choice.contains("index") && choice["index"].is_number_unsigned()) {
      index = choice["index"].get<size_t>();
    }
    if (index >= want || seen[index]) {
      return absl::InternalError(absl::StrCat(where, ": choice index ", index,
                                              " repeated or beyond ", want));
    }
    seen[index] = true;
    Completion& c = groups[index / n].completions[index % n];
    c.text = choice["text"].get<std::string>();
    c.truncated = choice.value("finish_reason", json()) == "length";
    c.adapter_version = version;
    if (choice.contains("logprobs") && choice["logprobs"].is_object() &&
        choice["logprobs"].contains("token_logprobs") &&
        choice["logprobs"]["token_logprobs"].is_array()) {
      // A null log-prob (a server that has none for a token) still counts
      // the token; the entropy figure is the mean over the known ones.
      for (const json& lp : choice["logprobs"]["token_logprobs"]) {
        ++c.completion_tokens;
        if (lp.is_number()) c.logprobs.push_back(lp.get<float>());
      }
    }
  }
  return groups;
}

}  // namespace microrl::learner
