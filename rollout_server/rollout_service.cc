#include "rollout_server/rollout_service.h"

#include <limits.h>
#include <stdlib.h>

#include <chrono>
#include <future>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/base/failpoint.h"
#include "common/base/logging.h"
#include "common/base/net.h"
#include "common/base/passing_thread.h"
#include "common/base/sha256.h"
#include "common/model/cuda_ipc.h"
#include "common/model/loader.h"
#include "common/rpc/status.h"
#include "common/safetensors/safetensors.h"

namespace microrl::rollout {
namespace {

constexpr size_t kMaxPromptTextBytes = size_t{1} << 20;
constexpr uint64_t kMaxAdapterBytes = uint64_t{4} << 30;

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kAbort:
      return v1::FINISH_REASON_ABORT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace

absl::Status CheckAdapterPath(const std::string& path) {
  if (path.empty())
    return absl::InvalidArgumentError("the adapter path is empty");
  if (path.front() == '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "adapter path \"", path, "\" must be relative to --adapter_dir"));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter path \"", path, "\" may not contain \"..\""));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckResolvesInside(const std::string& root,
                                 const std::string& path) {
  char resolved_root[PATH_MAX];
  if (::realpath(root.c_str(), resolved_root) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("--adapter_dir ", root, " does not exist"));
  }
  const std::string prefix = absl::StrCat(resolved_root, "/");
  for (const std::string& file :
       {absl::StrCat(root, "/", path),
        absl::StrCat(root, "/", path, "/adapter_config.json"),
        absl::StrCat(root, "/", path, "/adapter_model.safetensors")}) {
    char resolved[PATH_MAX];
    if (::realpath(file.c_str(), resolved) == nullptr)
      continue;  // missing: loading it reports NotFound
    if (!absl::StartsWith(resolved, prefix)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "adapter path \"", path, "\" leads outside --adapter_dir (a link)"));
    }
  }
  return absl::OkStatus();
}

RolloutService::RolloutService(const RolloutServiceOptions& options,
                               std::shared_ptr<Engine> engine,
                               const rpc::ProcessIdentity& identity)
    : options_(options), engine_(std::move(engine)), identity_(identity) {}

grpc::Status RolloutService::NoModel() const {
  return grpc::Status(
      grpc::StatusCode::FAILED_PRECONDITION,
      "no model loaded: the rollout server was started without --model");
}

absl::StatusOr<GenerationRequest> RolloutService::ToEngineRequest(
    const v1::GenerateRequest& request) const {
  GenerationRequest out;
  out.prompts.reserve(request.prompts_size());
  for (int p = 0; p < request.prompts_size(); ++p) {
    const v1::Prompt& prompt = request.prompts(p);
    switch (prompt.input_case()) {
      case v1::Prompt::kTokenIds:
        out.prompts.emplace_back(prompt.token_ids().ids().begin(),
                                 prompt.token_ids().ids().end());
        break;
      case v1::Prompt::kText:
        if (!engine_->has_tokenizer()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "prompt ", p,
              " is text, but this server has no tokenizer (no tokenizer.json "
              "beside the model); send token_ids"));
        }
        if (prompt.text().size() > kMaxPromptTextBytes) {
          return absl::InvalidArgumentError(
              absl::StrCat("prompt ", p, " has ", prompt.text().size(),
                           " bytes of text; at most 1 MiB"));
        }
        {
          absl::StatusOr<std::vector<int32_t>> ids =
              engine_->tokenizer()->EncodeChecked(prompt.text(),
                                                  /*add_special_tokens=*/false);
          if (!ids.ok()) {
            return absl::Status(
                ids.status().code(),
                absl::StrCat("prompt ", p, ": ", ids.status().message()));
          }
          out.prompts.push_back(*std::move(ids));
        }
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("prompt ", p, " has neither token_ids nor text"));
    }
  }
  out.group_size = request.group_size() == 0 ? 1 : request.group_size();
  const v1::SamplingParams& s = request.sampling();
  out.sampling.temperature = s.has_temperature() ? s.temperature() : 1.0;
  out.sampling.top_p = s.has_top_p() ? s.top_p() : 1.0;
  out.sampling.top_k = s.top_k();
  out.sampling.max_tokens = s.max_tokens();
  out.sampling.stop_token_ids.assign(s.stop_token_ids().begin(),
                                     s.stop_token_ids().end());
  out.sampling.stop_strings.assign(s.stop().begin(), s.stop().end());
  out.sampling.ignore_eos = s.ignore_eos();
  if (s.has_seed()) out.sampling.seed = s.seed();
  out.sampling.first_prompt_index = s.first_prompt_index();
  out.disable_adapter = request.disable_adapter();
  out.wait_if_sleeping = request.wait_if_sleeping();
  out.min_adapter_version = request.min_adapter_version();
  out.adapter_version = request.adapter_version();
  return out;
}

grpc::Status RolloutService::Generate(grpc::ServerContext* context,
                                      const v1::GenerateRequest* request,
                                      v1::GenerateResponse* response) {
  if (engine_ == nullptr) return NoModel();
  // Fault tests: the CANCELLED a server shutting down gives the calls it is
  // still serving when its grace period ends.
  if (absl::Status s =
          Failpoint("rollout.generate", absl::StatusCode::kCancelled);
      !s.ok()) {
    return rpc::ToGrpcStatus(s);
  }
  absl::StatusOr<GenerationRequest> engine_request = ToEngineRequest(*request);
  if (!engine_request.ok()) return rpc::ToGrpcStatus(engine_request.status());
  std::shared_ptr<std::atomic<bool>> cancelled = engine_request->cancelled;
  const std::vector<std::vector<int32_t>> prompts = engine_request->prompts;

  auto promise =
      std::make_shared<std::promise<absl::StatusOr<GenerationResult>>>();
  std::future<absl::StatusOr<GenerationResult>> future = promise->get_future();
  engine_->Submit(*std::move(engine_request),
                  [promise](absl::StatusOr<GenerationResult> result) {
                    promise->set_value(std::move(result));
                  });
  // The engine frees a cancelled request's sequences at its next step.
  while (future.wait_for(std::chrono::milliseconds(20)) !=
         std::future_status::ready) {
    if (context->IsCancelled()) cancelled->store(true);
  }
  absl::StatusOr<GenerationResult> result = future.get();
  if (!result.ok()) {
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED,
                          "the call was cancelled or passed its deadline");
    }
    return rpc::ToGrpcStatus(result.status());
  }
  response->set_queue_seconds(result->queue_seconds);
  response->set_generate_seconds(result->generate_seconds);
  for (size_t p = 0; p < result->groups.size(); ++p) {
    v1::CompletionGroup* group = response->add_groups();
    group->set_prompt_id(request->prompts(static_cast<int>(p)).id());
    group->mutable_prompt_token_ids()->Add(prompts[p].begin(),
                                           prompts[p].end());
    group->set_prompt_tokens(static_cast<int32_t>(prompts[p].size()));
    for (Completion& completion : result->groups[p]) {
      v1::Completion* out = group->add_completions();
      out->mutable_token_ids()->Add(completion.token_ids.begin(),
                                    completion.token_ids.end());
      out->set_text(std::move(completion.text));
      out->mutable_logprobs()->Add(completion.logprobs.begin(),
                                   completion.logprobs.end());
      out->set_finish_reason(ToProto(completion.finish_reason));
      out->set_adapter_version(completion.adapter_version);
      out->set_completion_tokens(
          static_cast<int32_t>(completion.token_ids.size()));
      out->set_stop_reason(std::move(completion.stop_reason));
    }
  }
  return grpc::Status::OK;
}

absl::StatusOr<std::shared_ptr<const model::LoraAdapter>>
RolloutService::ReadAdapter(grpc::ServerReader<v1::LoadAdapterRequest>* reader,
                            const std::string& peer,
                            v1::LoadAdapterResponse* response,
                            int* keep_versions) const {
  v1::LoadAdapterRequest message;
  if (!reader->Read(&message) || !message.has_header()) {
    return absl::InvalidArgumentError(
        "the LoadAdapter stream must start with an AdapterHeader");
  }
  const absl::Time first = absl::Now();
  const v1::AdapterHeader header = message.header();
  response->set_version(header.version());
  if (header.version() == 0) {
    return absl::InvalidArgumentError("adapter version must be at least 1");
  }
  // Refused before the upload, the loading and the merge, which the engine
  // would only throw away (it checks again: another load may come first).
  if (absl::Status s = CheckAdapterVersionAbove(
          header.version(), engine_->Snapshot().adapter_version);
      !s.ok()) {
    return s;
  }
  constexpr uint32_t kMaxKeepVersions = 16;
  if (header.keep_versions() > kMaxKeepVersions) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep_versions is ", header.keep_versions(), "; at most ",
                     kMaxKeepVersions));
  }
  *keep_versions = static_cast<int>(header.keep_versions());
  const model::ModelConfig& config = engine_->decoder().config();
  const at::Device device = engine_->decoder().options().device;
  // Kept in the base model's dtype: no per-step cast when decoding.
  const at::ScalarType dtype = engine_->decoder().options().dtype;
  absl::StatusOr<std::unique_ptr<model::LoraAdapter>> adapter;
  if (header.has_cuda_ipc()) {
    if (!header.path().empty() || header.total_bytes() != 0) {
      return absl::InvalidArgumentError(
          "a header with cuda_ipc has neither path nor total_bytes");
    }
    if (header.adapter_config_json().empty()) {
      return absl::InvalidArgumentError(
          "a CUDA IPC adapter needs adapter_config_json in the header");
    }
    if (!options_.cuda_ipc) {
      return absl::UnimplementedError(
          "CUDA IPC is off on this server (--cuda_ipc=false)");
    }
    // A handle lets the server read the sender's GPU memory: only a process
    // on this host can mean one.
    if (!IsLoopbackPeer(peer)) {
      return absl::UnimplementedError(
          absl::StrCat("CUDA IPC: the sender ", peer, " is not on this host"));
    }
    if (reader->Read(&message)) {
      return absl::InvalidArgumentError(
          "a header with cuda_ipc must be the only message");
    }
    const v1::CudaIpcAdapter& ipc = header.cuda_ipc();
    model::IpcAdapter shared;
    shared.handle = ipc.handle();
    shared.offset = static_cast<int64_t>(
        std::min<uint64_t>(ipc.offset(), uint64_t{1} << 62));
    shared.bytes = static_cast<int64_t>(
        std::min<uint64_t>(ipc.bytes(), uint64_t{1} << 62));
    shared.layout_json = ipc.layout_json();
    shared.device_uuid = ipc.device_uuid();
    absl::StatusOr<std::unique_ptr<model::LoraAdapter>> imported =
        model::ImportAdapter(shared, header.adapter_config_json(), config,
                             device, dtype);
    response->set_load_seconds(absl::ToDoubleSeconds(absl::Now() - first));
    // Whatever could not be opened here: the sender streams the bytes instead.
    if (!imported.ok() &&
        imported.status().code() == absl::StatusCode::kUnimplemented) {
      return imported.status();
    }
    adapter = std::move(imported);
  } else if (!header.path().empty()) {
    if (options_.adapter_dir.empty()) {
      return absl::FailedPreconditionError(
          "adapter paths need the server to be started with --adapter_dir");
    }
    if (absl::Status status = CheckAdapterPath(header.path()); !status.ok())
      return status;
    if (absl::Status status =
            CheckResolvesInside(options_.adapter_dir, header.path());
        !status.ok()) {
      return status;
    }
    if (reader->Read(&message)) {
      return absl::InvalidArgumentError(
          "a header with a path must be the only message");
    }
    // Tensor work off this gRPC thread (passing_thread.h).
    adapter = RunOnPassingThread([&] {
      return model::LoraAdapter::LoadPeft(
          options_.adapter_dir + "/" + header.path(), config, device, dtype);
    });
    response->set_load_seconds(absl::ToDoubleSeconds(absl::Now() - first));
  } else {
    if (header.adapter_config_json().empty()) {
      return absl::InvalidArgumentError(
          "a streamed adapter needs adapter_config_json in the header");
    }
    if (header.total_bytes() == 0 || header.total_bytes() > kMaxAdapterBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "total_bytes must be in [1, 4 GiB], not ", header.total_bytes()));
    }
    std::string bytes;
    // Grows as data arrives beyond the first 64 MiB, so a header alone cannot
    // make the server reserve 4 GiB.
    bytes.reserve(std::min<uint64_t>(header.total_bytes(), uint64_t{64} << 20));
    Sha256 sha;
    std::string trailer;
    while (reader->Read(&message)) {
      if (message.has_header()) {
        return absl::InvalidArgumentError(
            "the stream holds a second AdapterHeader");
      }
      if (!trailer.empty()) {
        return absl::InvalidArgumentError(
            "the stream goes on after its sha256_trailer");
      }
      if (message.has_sha256_trailer()) {
        trailer = message.sha256_trailer();
        if (trailer.empty()) {
          return absl::InvalidArgumentError("an empty sha256_trailer");
        }
        continue;
      }
      if (bytes.size() + message.safetensors_chunk().size() >
          header.total_bytes()) {
        return absl::InvalidArgumentError(
            absl::StrCat("the stream holds more than the ",
                         header.total_bytes(), " bytes announced"));
      }
      // Grows fourfold (fewer copies than doubling), never beyond what was
      // announced: a sender must send a quarter of a reservation to cause it.
      if (bytes.size() + message.safetensors_chunk().size() >
          bytes.capacity()) {
        bytes.reserve(std::min<uint64_t>(header.total_bytes(),
                                         uint64_t{4} * bytes.capacity()));
      }
      bytes += message.safetensors_chunk();
      sha.Update(message.safetensors_chunk());
    }
    const absl::Time received = absl::Now();
    response->set_receive_seconds(absl::ToDoubleSeconds(received - first));
    response->set_bytes_received(bytes.size());
    if (bytes.size() != header.total_bytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the stream ended after ", bytes.size(), " of ",
                       header.total_bytes(), " bytes"));
    }
    const std::string digest = sha.HexDigest();
    for (const std::string& expected : {header.sha256(), trailer}) {
      if (!expected.empty() && digest != expected) {
        return absl::InvalidArgumentError(absl::StrCat(
            "SHA-256 of the received bytes is ", digest, ", not ", expected));
      }
    }
    absl::StatusOr<std::shared_ptr<safetensors::SafetensorsFile>> file =
        safetensors::SafetensorsFile::FromBytes(std::move(bytes),
                                                "adapter_model.safetensors");
    if (!file.ok()) return absl::InvalidArgumentError(file.status().message());
    adapter = RunOnPassingThread([&] {
      return model::LoraAdapter::FromPeft(header.adapter_config_json(),
                                          *std::move(file), config, device,
                                          dtype);
    });
    response->set_load_seconds(absl::ToDoubleSeconds(absl::Now() - received));
  }
  if (!adapter.ok()) {
    // Whatever is wrong with the adapter, the request carried it.
    return absl::InvalidArgumentError(adapter.status().message());
  }
  // A merged adapter runs no LoRA terms, so its A need no fusing. Part of the
  // load (load_seconds).
  const absl::Time prepare = absl::Now();
  if (options_.merge_adapters &&
      engine_->decoder().MergesAdaptersForServing()) {
    if (absl::Status merged = RunOnPassingThread(
            [&] { return engine_->decoder().MergeAdapter(**adapter); });
        !merged.ok()) {
      return merged;
    }
  } else {
    RunOnPassingThread([&] { (*adapter)->FuseInputProjections(); });
  }
  response->set_load_seconds(response->load_seconds() +
                             absl::ToDoubleSeconds(absl::Now() - prepare));
  return std::shared_ptr<const model::LoraAdapter>(*std::move(adapter));
}

grpc::Status RolloutService::LoadAdapter(
    grpc::ServerContext* context,
    grpc::ServerReader<v1::LoadAdapterRequest>* reader,
    v1::LoadAdapterResponse* response) {
  if (engine_ == nullptr) return NoModel();
  // Each stream may buffer an adapter of up to 4 GiB: only so many at once.
  constexpr int kMaxAdapterUploads = 2;
  if (uploads_.fetch_add(1) >= kMaxAdapterUploads) {
    uploads_.fetch_sub(1);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat(kMaxAdapterUploads,
                                     " adapters are being loaded already; "
                                     "retry when they are done"));
  }
  struct Release {
    std::atomic<int>& count;
    ~Release() { count.fetch_sub(1); }
  } release{uploads_};
  int keep_versions = 1;
  absl::StatusOr<std::shared_ptr<const model::LoraAdapter>> adapter =
      ReadAdapter(reader, context->peer(), response, &keep_versions);
  const uint64_t version = response->version();
  const absl::Time received = absl::Now();
  if (!adapter.ok()) {
    MRL_LOG(WARNING) << "rejected adapter version " << version << ": "
                     << adapter.status();
    response->Clear();
    return rpc::ToGrpcStatus(adapter.status());
  }
  // Fault tests: a publish the server misses (UNAVAILABLE, as from a server
  // that is down at that moment); it keeps the adapter it had.
  if (absl::Status s = Failpoint("rollout.load_adapter"); !s.ok()) {
    response->Clear();
    return rpc::ToGrpcStatus(s);
  }
  absl::StatusOr<double> swapped =
      engine_->LoadAdapter(*adapter, version, keep_versions);
  if (!swapped.ok()) return rpc::ToGrpcStatus(swapped.status());
  for (uint64_t resident : engine_->Snapshot().resident_versions)
    response->add_resident_versions(resident);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - received);
  response->set_rank(static_cast<int32_t>((*adapter)->config().rank));
  for (model::LoraModule module : (*adapter)->config().targets) {
    response->add_target_modules(model::LoraModuleName(module));
  }
  response->set_swap_seconds(seconds);
  MRL_LOG(INFO) << "adapter version " << version
                << " loaded: " << response->bytes_received()
                << " bytes, received in " << response->receive_seconds()
                << " s, loaded in " << response->load_seconds()
                << " s, swapped in " << seconds << " s";
  return grpc::Status::OK;
}

grpc::Status RolloutService::Sleep(grpc::ServerContext* context,
                                   const v1::SleepRequest* request,
                                   v1::SleepResponse* response) {
  if (engine_ == nullptr) return NoModel();
  // Fault tests: a server that cannot sleep (UNAVAILABLE).
  if (absl::Status s = Failpoint("rollout.sleep"); !s.ok())
    return rpc::ToGrpcStatus(s);
  const absl::Time start = absl::Now();
  absl::StatusOr<int64_t> freed = engine_->Sleep(request->abort_running());
  if (!freed.ok()) return rpc::ToGrpcStatus(freed.status());
  response->set_freed_bytes(static_cast<uint64_t>(*freed));
  response->set_memory_in_use_bytes(
      device::QueryMemory(options_.device).allocated_bytes);
  response->set_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  return grpc::Status::OK;
}

grpc::Status RolloutService::Wake(grpc::ServerContext* context,
                                  const v1::WakeRequest* request,
                                  v1::WakeResponse* response) {
  if (engine_ == nullptr) return NoModel();
  const absl::Time start = absl::Now();
  absl::StatusOr<int64_t> bytes = engine_->Wake();
  if (!bytes.ok()) return rpc::ToGrpcStatus(bytes.status());
  response->set_kv_cache_bytes(static_cast<uint64_t>(*bytes));
  response->set_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  return grpc::Status::OK;
}

grpc::Status RolloutService::GetInfo(grpc::ServerContext* context,
                                     const v1::GetInfoRequest* request,
                                     v1::RolloutInfo* response) {
  identity_.Fill(response->mutable_process());
  response->set_device(options_.device.ToString());
  const device::MemoryInfo memory = device::QueryMemory(options_.device);
  response->set_memory_allocated_bytes(memory.allocated_bytes);
  response->set_memory_reserved_bytes(memory.reserved_bytes);
  response->set_device_memory_total_bytes(memory.total_bytes);
  response->set_torch_version(device::TorchVersion());
  if (engine_ == nullptr) {
    response->set_state(v1::ROLLOUT_STATE_NO_MODEL);
    return grpc::Status::OK;
  }
  const EngineSnapshot snapshot = engine_->Snapshot();
  const model::ModelConfig& config = engine_->decoder().config();
  response->set_state(snapshot.state == EngineState::kSleeping
                          ? v1::ROLLOUT_STATE_SLEEPING
                          : v1::ROLLOUT_STATE_READY);
  response->set_model_path(options_.model_path);
  response->set_architecture(model::ArchitectureName(config.architecture));
  response->set_dtype(model::DtypeName(engine_->decoder().options().dtype));
  response->set_accepts_cuda_ipc(options_.cuda_ipc &&
                                 engine_->decoder().options().device.is_cuda());
  response->set_kv_cache_bytes(static_cast<uint64_t>(snapshot.kv_cache_bytes));
  response->set_kv_cache_budget_bytes(
      static_cast<uint64_t>(snapshot.kv_cache_budget_bytes));
  response->set_adapter_version(snapshot.adapter_version);
  for (uint64_t resident : snapshot.resident_versions)
    response->add_resident_adapter_versions(resident);
  response->set_adapter_rank(snapshot.adapter_rank);
  for (const std::string& target : snapshot.adapter_targets) {
    response->add_adapter_target_modules(target);
  }
  response->set_running_sequences(snapshot.running_sequences);
  response->set_waiting_sequences(snapshot.waiting_sequences);
  response->set_max_model_len(static_cast<int32_t>(engine_->max_model_len()));
  response->set_vocab_size(static_cast<int32_t>(config.vocab_size));
  for (int64_t id : engine_->eos_token_ids())
    response->add_eos_token_ids(static_cast<int32_t>(id));
  return grpc::Status::OK;
}

}  // namespace microrl::rollout
