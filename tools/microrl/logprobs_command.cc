#include "tools/microrl/logprobs_command.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/lines.h"
#include "common/device/device.h"
#include "common/model/decoder.h"
#include "common/model/loader.h"
#include "common/model/lora.h"
#include "common/model/token_stats.h"
#include "nlohmann/json.hpp"

namespace microrl::cli {
namespace {

struct Request {
  int64_t line = 0;
  std::vector<int64_t> ids;
  int64_t start = 1;
};

absl::StatusOr<Request> ParseLine(const std::string& text, int64_t line,
                                  int64_t vocab) {
  auto error = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("stdin line ", line, ": ", why));
  };
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object())
    return error("not a JSON object");
  if (!json.contains("ids") || !json["ids"].is_array())
    return error("needs \"ids\": [...]");
  Request request;
  request.line = line;
  for (const auto& id : json["ids"]) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= vocab) {
      return error(absl::StrCat("ids must be integers in [0, ", vocab, ")"));
    }
    request.ids.push_back(id.get<int64_t>());
  }
  if (json.contains("start")) {
    if (!json["start"].is_number_integer())
      return error("\"start\" must be an integer");
    request.start = json["start"].get<int64_t>();
  }
  if (request.start < 1 ||
      request.start > static_cast<int64_t>(request.ids.size())) {
    return error(absl::StrCat("\"start\" must be in [1, ", request.ids.size(),
                              "] (the first token has no log-prob)"));
  }
  return request;
}

// Scores a batch of requests as one right-padded forward pass.
absl::Status ScoreBatch(const model::Decoder& decoder,
                        const model::LoraAdapter* adapter, double temperature,
                        const std::vector<Request>& batch, std::ostream& out) {
  int64_t longest = 0;
  for (const Request& request : batch) {
    longest =
        std::max<int64_t>(longest, static_cast<int64_t>(request.ids.size()));
  }
  at::Tensor ids =
      at::zeros({static_cast<int64_t>(batch.size()), longest}, at::kLong);
  for (size_t row = 0; row < batch.size(); ++row) {
    ids[row]
        .narrow(0, 0, batch[row].ids.size())
        .copy_(at::tensor(batch[row].ids, at::kLong));
  }
  c10::InferenceMode inference;
  absl::StatusOr<at::Tensor> hidden = decoder.Forward(ids, {adapter, false});
  if (!hidden.ok()) return hidden.status();
  // Rows predicting each scored token: position t - 1 predicts token t.
  std::vector<int64_t> rows;
  std::vector<int64_t> targets;
  for (size_t row = 0; row < batch.size(); ++row) {
    for (size_t t = batch[row].start; t < batch[row].ids.size(); ++t) {
      rows.push_back(static_cast<int64_t>(row) * longest +
                     static_cast<int64_t>(t) - 1);
      targets.push_back(batch[row].ids[t]);
    }
  }
  const at::Tensor flat = hidden->reshape({-1, hidden->size(-1)});
  const at::Tensor selected =
      flat.index_select(0, at::tensor(rows, at::kLong).to(flat.device()));
  absl::StatusOr<model::TokenStats> stats = model::ComputeTokenStats(
      selected, decoder.lm_head(), at::tensor(targets, at::kLong), temperature,
      model::ChunkRowsForBudget(decoder.config().vocab_size));
  if (!stats.ok()) return stats.status();
  const at::Tensor logprobs = stats->logprobs.to(at::kCPU, at::kDouble);
  const at::Tensor entropy = stats->entropy.to(at::kCPU, at::kDouble);
  const double* lp = logprobs.data_ptr<double>();
  const double* ent = entropy.data_ptr<double>();
  size_t k = 0;
  for (const Request& request : batch) {
    nlohmann::json line = {{"logprobs", nlohmann::json::array()},
                           {"entropy", nlohmann::json::array()}};
    for (size_t t = request.start; t < request.ids.size(); ++t, ++k) {
      line["logprobs"].push_back(lp[k]);
      line["entropy"].push_back(ent[k]);
    }
    out << line.dump() << "\n";
  }
  out.flush();
  return absl::OkStatus();
}

}  // namespace

absl::Status RunLogprobsCommand(const LogprobsCommandOptions& options,
                                std::istream& in, std::ostream& out) {
  if (options.model_dir.empty())
    return absl::InvalidArgumentError("--model is required");
  if (!(options.temperature > 0)) {
    return absl::InvalidArgumentError("--temperature must be positive");
  }
  if (options.batch_lines < 1)
    return absl::InvalidArgumentError("--batch_lines must be >= 1");
  absl::StatusOr<device::Device> device = device::ResolveDevice(options.device);
  if (!device.ok()) return device.status();
  model::ModelLoadOptions load;
  load.model_dir = options.model_dir;
  load.device = *device;
  load.model_setting = "";
  absl::StatusOr<std::unique_ptr<model::Decoder>> decoder =
      model::LoadModel(load);
  if (!decoder.ok()) return decoder.status();
  const at::Device torch_device = (*decoder)->options().device;
  std::unique_ptr<model::LoraAdapter> adapter;
  if (!options.adapter_dir.empty()) {
    absl::StatusOr<std::unique_ptr<model::LoraAdapter>> loaded =
        model::LoraAdapter::LoadPeft(options.adapter_dir, (*decoder)->config(),
                                     torch_device);
    if (!loaded.ok()) return loaded.status();
    adapter = *std::move(loaded);
  }
  std::vector<Request> batch;
  auto flush = [&]() -> absl::Status {
    absl::Status scored =
        ScoreBatch(**decoder, adapter.get(), options.temperature, batch, out);
    batch.clear();
    return scored;
  };
  const absl::Status read = ForEachNonBlankLine(
      in, [&](int64_t line, const std::string& text) -> absl::Status {
        absl::StatusOr<Request> request =
            ParseLine(text, line, (*decoder)->config().vocab_size);
        if (!request.ok()) {
          // Lines before the bad one are still answered.
          if (!batch.empty()) {
            if (absl::Status s = flush(); !s.ok()) return s;
          }
          return request.status();
        }
        batch.push_back(*std::move(request));
        if (static_cast<int>(batch.size()) == options.batch_lines) {
          return flush();
        }
        return absl::OkStatus();
      });
  if (!read.ok()) return read;
  if (!batch.empty()) return flush();
  return absl::OkStatus();
}

}  // namespace microrl::cli
