#ifndef MICRORL_ROLLOUT_SERVER_OPENAI_SERVER_H_
#define MICRORL_ROLLOUT_SERVER_OPENAI_SERVER_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/rpc/security.h"
#include "common/tokenizer/chat_template.h"
#include "rollout_server/engine.h"

namespace httplib {
class Server;
}

namespace microrl::rollout {

struct OpenAiServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: a free port
  // The same TLS and token rules as the gRPC server (Authorization: Bearer).
  rpc::ServerSecurity security;
  // The name /v1/models lists for the base model; adapters are
  // "<name>@v<version>".
  std::string model_name;
  // Where tokenizer_config.json (the chat template) is read from.
  std::string model_dir;
  int threads = 16;                  // requests served at once
  int64_t max_body_bytes = 8 << 20;  // larger bodies: 413
};

// The OpenAI-compatible HTTP endpoint of the rollout server (cpp-httplib):
// GET /v1/models, POST /v1/completions and POST /v1/chat/completions, with
// streaming as server-sent events. Requests go through the same Engine queue
// as gRPC Generate. Errors use OpenAI's JSON error shape. docs/serving.md.
class OpenAiServer {
 public:
  static absl::StatusOr<std::unique_ptr<OpenAiServer>> Start(
      const OpenAiServerOptions& options, std::shared_ptr<Engine> engine);
  ~OpenAiServer();  // stops serving

  OpenAiServer(const OpenAiServer&) = delete;
  OpenAiServer& operator=(const OpenAiServer&) = delete;

  int port() const { return port_; }
  void Stop();

 private:
  struct Impl;
  OpenAiServer() = default;

  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace microrl::rollout

#endif  // MICRORL_ROLLOUT_SERVER_OPENAI_SERVER_H_
