#include "learner/rollout_client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/base/sha256.h"
#include "common/rpc/client.h"
#include "common/rpc/status.h"

namespace microrl::learner {
namespace {

constexpr size_t kChunkBytes = (size_t{4} << 20) - 4096;

std::chrono::system_clock::time_point Deadline(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RolloutClient>> RolloutClient::Create(
    const std::string& address, const RolloutClientOptions& options) {
  if (address.empty())
    return absl::InvalidArgumentError("no rollout server address");
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      rpc::MakeSecureChannel(address, options.security);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<RolloutClient>(new RolloutClient(
      address, v1::Rollout::NewStub(*std::move(channel)), options));
}

absl::Status RolloutClient::Call(
    const std::string& what, absl::Duration timeout,
    const std::function<grpc::Status(grpc::ClientContext*)>& call) {
  const std::string label = absl::StrCat("rollout ", what, " at ", address_);
  auto cancelled = [this] {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  };
  absl::Status status = rpc::RetryUnavailable(
      label, options_.retry,
      [&]() -> absl::Status {
        grpc::ClientContext context;
        context.set_deadline(Deadline(timeout));
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (cancelled_)
            return absl::CancelledError("the learner is stopping");
          in_flight_.insert(&context);
        }
        const grpc::Status result = call(&context);
        {
          std::lock_guard<std::mutex> lock(mu_);
          in_flight_.erase(&context);
        }
        return rpc::FromGrpcStatus(result);
      },
      cancelled);
  if (status.ok() || status.code() == absl::StatusCode::kUnavailable)
    return status;
  return absl::Status(status.code(),
                      absl::StrCat(label, ": ", status.message()));
}

absl::StatusOr<std::vector<CompletionGroup>> RolloutClient::Generate(
    const std::vector<PromptIds>& prompts, const GenerateParams& params) {
  v1::GenerateRequest request;
  request.set_request_id(params.request_id);
  request.set_group_size(static_cast<int32_t>(params.group_size));
  request.set_min_adapter_version(params.min_adapter_version);
  request.set_adapter_version(params.adapter_version);
  request.set_disable_adapter(params.disable_adapter);
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(static_cast<float>(params.temperature));
  sampling->set_top_p(static_cast<float>(params.top_p));
  sampling->set_top_k(static_cast<int32_t>(params.top_k));
  sampling->set_max_tokens(static_cast<int32_t>(params.max_tokens));
  sampling->set_seed(params.seed);
  sampling->set_first_prompt_index(params.first_prompt_index);
  for (const PromptIds& prompt : prompts) {
    v1::Prompt* p = request.add_prompts();
    p->set_id(prompt.id);
    p->mutable_token_ids()->mutable_ids()->Add(prompt.ids.begin(),
                                               prompt.ids.end());
  }
  v1::GenerateResponse response;
  absl::Status status = Call(
      "Generate", options_.generate_timeout, [&](grpc::ClientContext* context) {
        response.Clear();
        return stub_->Generate(context, request, &response);
      });
  if (!status.ok()) return status;
  std::vector<CompletionGroup> groups(response.groups_size());
  for (int p = 0; p < response.groups_size(); ++p) {
    const v1::CompletionGroup& from = response.groups(p);
    CompletionGroup& to = groups[p];
    to.prompt_token_ids.assign(from.prompt_token_ids().begin(),
                               from.prompt_token_ids().end());
    to.completions.resize(from.completions_size());
    for (int g = 0; g < from.completions_size(); ++g) {
      const v1::Completion& c = from.completions(g);
      Completion& out = to.completions[g];
      out.token_ids.assign(c.token_ids().begin(), c.token_ids().end());
      out.logprobs.assign(c.logprobs().begin(), c.logprobs().end());
      out.text = c.text();
      out.completion_tokens = c.completion_tokens();
      out.truncated = c.finish_reason() == v1::FINISH_REASON_LENGTH;
      out.adapter_version = c.adapter_version();
    }
  }
  return groups;
}

absl::StatusOr<v1::LoadAdapterResponse> RolloutClient::SendAdapter(
    uint64_t version,
    const std::function<void(grpc::ClientWriter<v1::LoadAdapterRequest>&)>&
        write) {
  v1::LoadAdapterResponse response;
  int attempts = 0;
  absl::Status status = Call(
      "LoadAdapter", options_.control_timeout,
      [&](grpc::ClientContext* context) {
        ++attempts;
        response.Clear();
        std::unique_ptr<grpc::ClientWriter<v1::LoadAdapterRequest>> writer =
            stub_->LoadAdapter(context, &response);
        write(*writer);
        writer->WritesDone();
        return writer->Finish();
      });
  // A retry after a reply that got lost finds the version already loaded.
  if (status.code() == absl::StatusCode::kFailedPrecondition && attempts > 1) {
    absl::StatusOr<v1::RolloutInfo> info = GetInfo();
    if (info.ok() && info->adapter_version() == version) {
      response.set_version(version);
      return response;
    }
  }
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::LoadAdapterResponse> RolloutClient::LoadAdapter(
    uint64_t version, const std::string& config_json,
    const std::string& safetensors, uint32_t keep_versions) {
  return SendAdapter(
      version, [&](grpc::ClientWriter<v1::LoadAdapterRequest>& writer) {
        v1::LoadAdapterRequest message;
        v1::AdapterHeader* header = message.mutable_header();
        header->set_version(version);
        header->set_adapter_config_json(config_json);
        header->set_total_bytes(safetensors.size());
        header->set_keep_versions(keep_versions);
        bool ok = writer.Write(message);
        // Hashed while streaming (the server hashes what it has received
        // meanwhile); the digest goes last.
        Sha256 sha;
        for (size_t at = 0; ok && at < safetensors.size(); at += kChunkBytes) {
          message.Clear();
          const absl::string_view chunk =
              absl::string_view(safetensors).substr(at, kChunkBytes);
          sha.Update(chunk);
          message.set_safetensors_chunk(chunk.data(), chunk.size());
          ok = writer.Write(message);
        }
        if (ok) {
          message.Clear();
          message.set_sha256_trailer(sha.HexDigest());
          writer.Write(message);
        }
      });
}

absl::StatusOr<v1::LoadAdapterResponse> RolloutClient::LoadAdapterIpc(
    uint64_t version, const std::string& config_json,
    const model::IpcAdapter& ipc, uint32_t keep_versions) {
  return SendAdapter(version,
                     [&](grpc::ClientWriter<v1::LoadAdapterRequest>& writer) {
                       v1::LoadAdapterRequest message;
                       v1::AdapterHeader* header = message.mutable_header();
                       header->set_version(version);
                       header->set_adapter_config_json(config_json);
                       header->set_keep_versions(keep_versions);
                       v1::CudaIpcAdapter* shared = header->mutable_cuda_ipc();
                       shared->set_handle(ipc.handle);
                       shared->set_offset(static_cast<uint64_t>(ipc.offset));
                       shared->set_bytes(static_cast<uint64_t>(ipc.bytes));
                       shared->set_layout_json(ipc.layout_json);
                       shared->set_device_uuid(ipc.device_uuid);
                       writer.Write(message);
                     });
}

template <typename Request, typename Response>
absl::StatusOr<Response> RolloutClient::Control(
    const std::string& what,
    grpc::Status (v1::Rollout::Stub::*method)(grpc::ClientContext*,
                                              const Request&, Response*),
    const Request& request) {
  Response response;
  const absl::Status status =
      Call(what, options_.control_timeout, [&](grpc::ClientContext* c) {
        return (stub_.get()->*method)(c, request, &response);
      });
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::SleepResponse> RolloutClient::Sleep(bool abort_running) {
  v1::SleepRequest request;
  request.set_abort_running(abort_running);
  return Control("Sleep", &v1::Rollout::Stub::Sleep, request);
}

absl::StatusOr<v1::WakeResponse> RolloutClient::Wake() {
  return Control("Wake", &v1::Rollout::Stub::Wake, v1::WakeRequest());
}

absl::StatusOr<v1::RolloutInfo> RolloutClient::GetInfo() {
  return Control("GetInfo", &v1::Rollout::Stub::GetInfo, v1::GetInfoRequest());
}

absl::Status RolloutClient::WakeIfAsleep() {
  absl::StatusOr<v1::RolloutInfo> info = GetInfo();
  if (!info.ok()) return info.status();
  if (info->state() != v1::ROLLOUT_STATE_SLEEPING) return absl::OkStatus();
  return Wake().status();
}

absl::Status RolloutClient::WakeOnce(absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::WakeResponse response;
  return rpc::FromGrpcStatus(
      stub_->Wake(&context, v1::WakeRequest(), &response));
}

void RolloutClient::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  for (grpc::ClientContext* context : in_flight_) context->TryCancel();
}

}  // namespace microrl::learner
