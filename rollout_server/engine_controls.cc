// The engine's controls: adapter swaps, Sleep and Wake, applied on the engine
// thread between steps.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"
#include "common/device/device.h"
#include "common/model/tensor_io.h"
#include "rollout_server/decode_graphs.h"
#include "rollout_server/engine.h"
#include "rollout_server/engine_internal.h"
#include "rollout_server/sampler.h"

namespace microrl::rollout {

using engine_internal::ReserveCache;
using engine_internal::Seconds;
using engine_internal::ToDevice;

absl::Status CheckAdapterVersionAbove(uint64_t version, uint64_t loaded) {
  if (version > loaded) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("adapter version ", version,
                   " is not above the loaded version ", loaded));
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
    std::shared_ptr<const model::LoraAdapter> adapter, uint64_t version,
    int keep_versions) {
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
  control->keep_versions = std::max(1, keep_versions);
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

bool Engine::HeadPartlyAdmitted() const {
  return !waiting_.empty() && !waiting_.front()->finished &&
         waiting_.front()->started.has_value();
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
        result = CheckAdapterVersionAbove(control.version, adapter_version_);
        if (!result.ok()) break;
        // Running sequences, and the rest of a request partly admitted,
        // finish with the adapter they started with (they hold it).
        adapter_ = control.adapter;
        adapter_version_ = control.version;
        resident_[adapter_version_] = adapter_;
        while (static_cast<int>(resident_.size()) > control.keep_versions)
          resident_.erase(resident_.begin());
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

const model::LoraAdapter* Engine::RunningAdapter() const {
  return running_.empty() ? nullptr : running_adapter_.get();
}

uint64_t Engine::VersionFor(const Request& request) const {
  if (request.version.has_value()) return *request.version;
  return request.spec.disable_adapter ? 0 : adapter_version_;
}

}  // namespace microrl::rollout
