#ifndef MICRORL_LEARNER_OPENAI_CLIENT_H_
#define MICRORL_LEARNER_OPENAI_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "learner/generation.h"

namespace httplib {
class Client;
}

namespace microrl::learner {

struct OpenAiClientOptions {
  // e.g. http://127.0.0.1:8000/v1 (a microrl rollout server's --openai_port,
  // or vLLM's server); https needs a certificate the system trusts, or
  // tls_ca_file.
  std::string base_url;
  std::string api_key;  // sent as "Authorization: Bearer <key>" when set
  std::string tls_ca_file;
  // The model the completions come from; empty: the last /v1/models lists
  // (on a microrl server, the newest adapter version).
  std::string model;
  // The model Generate uses when asked for the base model (disable_adapter,
  // e.g. learner eval --compare_base); empty: such requests are refused.
  std::string base_model;
  absl::Duration timeout = absl::Hours(1);  // per HTTP request
  // 429 and 503 answers are retried this many times, waiting Retry-After
  // (default 5 s) in between; failed connections three times, 2 s apart.
  int retries = 12;
};

// Completions from any OpenAI-compatible server through POST
// {base_url}/completions, prompts sent as token ids (so the server's tokenizer
// must be the one the prompts were made with), the sampled tokens' log-probs
// asked for (logprobs: 0). Seeds: the request's seed is params.seed +
// params.first_prompt_index, so a microrl server samples what its gRPC
// Generate would. Completions carry text, log-probs and their count, not
// token ids. Not thread-safe.
class OpenAiClient : public CompletionSource {
 public:
  static absl::StatusOr<std::unique_ptr<OpenAiClient>> Create(
      const OpenAiClientOptions& options);
  ~OpenAiClient() override;

  absl::StatusOr<std::vector<CompletionGroup>> Generate(
      const std::vector<PromptIds>& prompts,
      const GenerateParams& params) override;

  const std::string& model() const { return options_.model; }

 private:
  explicit OpenAiClient(const OpenAiClientOptions& options);
  // The answer's JSON body, or an error naming the path and the server's
  // message.
  absl::StatusOr<std::string> Call(const std::string& method,
                                   const std::string& path,
                                   const std::string& body);

  OpenAiClientOptions options_;
  std::string path_prefix_;  // "/v1"
  std::unique_ptr<httplib::Client> http_;
};

}  // namespace microrl::learner

#endif  // MICRORL_LEARNER_OPENAI_CLIENT_H_
