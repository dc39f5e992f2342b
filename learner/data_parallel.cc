#include "learner/data_parallel.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/net.h"
#include "common/base/sha256.h"

namespace microrl::learner {
namespace {

// A hex SHA-256 as four int64 (a tensor collectives carry exactly).
std::vector<int64_t> DigestWords(const std::string& hex) {
  std::vector<int64_t> words(4, 0);
  for (size_t w = 0; w < 4 && hex.size() >= 64; ++w) {
    uint64_t value = 0;
    absl::SimpleHexAtoi(hex.substr(16 * w, 16), &value);
    std::memcpy(&words[w], &value, sizeof(value));
  }
  return words;
}

at::Tensor OnDevice(const distributed::Communicator& comm,
                    const std::vector<int64_t>& values) {
  return at::tensor(values, at::kLong).to(comm.device());
}

at::Tensor OnDevice(const distributed::Communicator& comm,
                    const std::vector<double>& values) {
  return at::tensor(values, at::kDouble).to(comm.device());
}

// Rank 0 tells the others whether it opened the run directory and the step of
// the checkpoint it resumes from (-1: none), which is returned; the others'
// configuration hash must be its.
absl::StatusOr<int64_t> ShareRunStart(distributed::Communicator& comm,
                                      const absl::Status& opened,
                                      int64_t checkpoint_step,
                                      const std::string& config_yaml) {
  const std::vector<int64_t> mine = DigestWords(Sha256Hex(config_yaml));
  std::vector<int64_t> values = {opened.ok() ? 1 : 0, checkpoint_step};
  values.insert(values.end(), mine.begin(), mine.end());
  at::Tensor start = OnDevice(comm, values);
  if (absl::Status s = comm.Broadcast({start}, 0); !s.ok()) return s;
  const at::Tensor host = start.cpu();
  const int64_t* v = host.data_ptr<int64_t>();
  if (comm.rank() == 0) {
    if (!opened.ok()) return opened;
    return checkpoint_step;
  }
  if (v[0] != 1) {
    return absl::FailedPreconditionError(
        "rank 0 could not open the run directory (its log says why)");
  }
  for (size_t w = 0; w < 4; ++w) {
    if (v[2 + w] != mine[w]) {
      return absl::InvalidArgumentError(
          "this rank's configuration differs from rank 0's (every rank must "
          "get the same --config and --set)");
    }
  }
  return v[1];
}

// The step of a checkpoint directory ("<root>/step_00000042" -> 42).
int64_t CheckpointStepOf(const std::string& dir) {
  int64_t step = -1;
  const size_t at = dir.rfind("step_");
  if (at == std::string::npos || !absl::SimpleAtoi(dir.substr(at + 5), &step))
    return -1;
  return step;
}

}  // namespace

absl::StatusOr<TrainConfig> RankConfig(const TrainConfig& config,
                                       const distributed::LaunchEnv& launch) {
  TrainConfig rank = config;
  if (config.device == "cuda") {
    rank.device = absl::StrCat("cuda:", launch.local_rank);
  }
  if (config.rollout_port_per_rank) {
    absl::StatusOr<HostPort> address = ParseHostPort(config.rollout_address);
    if (!address.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rollout.address: ", address.status().message()));
    }
    address->port += launch.local_rank;
    if (address->port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("rollout.address: port + local rank ", launch.local_rank,
                       " is above 65535"));
    }
    rank.rollout_address = address->ToString();
  }
  return rank;
}

Share ShareOf(int64_t count, int rank, int world) {
  return {count * rank / world, count * (rank + 1) / world};
}

absl::StatusOr<SharedRollouts> ShareRollouts(
    distributed::Communicator& comm, int64_t total_groups, int64_t first_group,
    int64_t group_size, const std::vector<CompletionGroup>& groups,
    const std::vector<RewardResult>& scores, int64_t off_policy_refused) {
  const int64_t local_groups = static_cast<int64_t>(groups.size());
  if (first_group < 0 || first_group + local_groups > total_groups ||
      static_cast<int64_t>(scores.size()) != local_groups * group_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "groups [", first_group, ", ", first_group + local_groups, ") of ",
        total_groups, " with ", scores.size(), " scores"));
  }
  for (const CompletionGroup& g : groups) {
    if (static_cast<int64_t>(g.completions.size()) != group_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("a group has ", g.completions.size(),
                       " completions, not ", group_size));
    }
  }
  // The reward components' names, in order; every rank must see the same.
  std::vector<std::string> names;
  for (const RewardResult& r : scores) {
    for (const auto& [name, value] : r.components) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  {
    // A rank without groups has no names to say: it takes the others'.
    std::vector<int64_t> words =
        DigestWords(Sha256Hex(absl::StrJoin(names, "\n")));
    std::vector<int64_t> check;
    for (int64_t w : words) {
      check.push_back(local_groups > 0 ? w : INT64_MIN);
      check.push_back(local_groups > 0 ? -w : INT64_MIN);
    }
    at::Tensor agreed = OnDevice(comm, check);
    if (absl::Status s = comm.AllReduce({agreed}, distributed::ReduceOp::kMax);
        !s.ok()) {
      return s;
    }
    const at::Tensor host = agreed.cpu();
    const int64_t* a = host.data_ptr<int64_t>();
    for (size_t w = 0; w < 4 && local_groups > 0; ++w) {
      if (a[2 * w] != words[w] || a[2 * w + 1] != -words[w]) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the ranks' reward services name different reward components "
            "(this rank's: ",
            absl::StrJoin(names, ", "), ")"));
      }
    }
  }
  // One row per completion of the step: reward, correct, tokens, truncated,
  // then the components (NaN where a completion has none).
  const int64_t width = 5 + static_cast<int64_t>(names.size());
  const int64_t rows = total_groups * group_size;
  at::Tensor table = at::zeros({rows + 1, width}, at::kDouble);
  double* t = table.data_ptr<double>();
  for (int64_t g = 0; g < local_groups; ++g) {
    for (int64_t k = 0; k < group_size; ++k) {
      const int64_t local = g * group_size + k;
      double* row = t + ((first_group + g) * group_size + k) * width;
      const RewardResult& r = scores[local];
      const Completion& c = groups[g].completions[k];
      row[0] = r.reward;
      row[1] = r.correct ? 1 : 0;
      row[2] = static_cast<double>(c.completion_tokens);
      row[3] = c.truncated ? 1 : 0;
      row[4] = 1;  // present
      for (size_t n = 0; n < names.size(); ++n) {
        auto it = r.components.find(names[n]);
        row[5 + n] = it == r.components.end() ? std::nan("") : it->second;
      }
    }
  }
  t[rows * width] = static_cast<double>(off_policy_refused);
  at::Tensor shared = table.to(comm.device());
  // Each row is filled by exactly one rank; the others add zeros (NaN where a
  // component is missing survives the sum, as intended).
  if (absl::Status s = comm.AllReduce({shared}); !s.ok()) return s;
  const at::Tensor host = shared.cpu().contiguous();
  const double* h = host.data_ptr<double>();
  SharedRollouts out;
  out.off_policy_refused = static_cast<int64_t>(h[rows * width]);
  for (int64_t g = 0; g < total_groups; ++g) {
    const bool local = g >= first_group && g < first_group + local_groups;
    CompletionGroup group;
    if (local)
      group.prompt_token_ids = groups[g - first_group].prompt_token_ids;
    for (int64_t k = 0; k < group_size; ++k) {
      const double* row = h + (g * group_size + k) * width;
      if (row[4] != 1) {
        return absl::InternalError(
            absl::StrCat("no rank sent group ", g,
                         " (the ranks disagree on the step's "
                         "problems)"));
      }
      RewardResult r;
      if (local) {
        r = scores[(g - first_group) * group_size + k];
        group.completions.push_back(groups[g - first_group].completions[k]);
      } else {
        r.reward = row[0];
        r.correct = row[1] != 0;
        for (size_t n = 0; n < names.size(); ++n) {
          if (!std::isnan(row[5 + n])) r.components[names[n]] = row[5 + n];
        }
        Completion c;
        c.completion_tokens = static_cast<int64_t>(row[2]);
        c.truncated = row[3] != 0;
        group.completions.push_back(std::move(c));
      }
      out.scores.push_back(std::move(r));
    }
    out.groups.push_back(std::move(group));
  }
  return out;
}

absl::StatusOr<Agreement> Agree(distributed::Communicator& comm,
                                const absl::Status& local, bool stopping,
                                double elapsed_seconds) {
  const bool cancelled = local.code() == absl::StatusCode::kCancelled;
  at::Tensor flags =
      OnDevice(comm, std::vector<double>{!local.ok() && !cancelled ? 1.0 : 0.0,
                                         stopping || cancelled ? 1.0 : 0.0,
                                         elapsed_seconds});
  if (absl::Status s = comm.AllReduce({flags}, distributed::ReduceOp::kMax);
      !s.ok()) {
    return s;
  }
  const at::Tensor host = flags.cpu();
  const double* f = host.data_ptr<double>();
  Agreement agreement;
  agreement.stopping = f[1] != 0;
  agreement.elapsed_seconds = f[2];
  agreement.status = local;
  if (local.ok() && f[0] != 0) {
    agreement.status =
        absl::AbortedError("another rank failed this step (its log says why)");
  } else if (local.ok() && agreement.stopping) {
    agreement.status = absl::CancelledError("a rank is stopping");
  }
  return agreement;
}

absl::Status SameOnEveryRank(distributed::Communicator& comm,
                             const std::string& sha256_hex,
                             const std::string& what) {
  const std::vector<int64_t> mine = DigestWords(sha256_hex);
  at::Tensor root = OnDevice(comm, mine);
  if (absl::Status s = comm.Broadcast({root}, 0); !s.ok()) return s;
  const bool same = at::equal(root.cpu(), at::tensor(mine, at::kLong));
  at::Tensor differ = OnDevice(comm, std::vector<int64_t>{same ? 0 : 1});
  if (absl::Status s = comm.AllReduce({differ}); !s.ok()) return s;
  const int64_t count = differ.cpu().item<int64_t>();
  if (count != 0) {
    return absl::DataLossError(absl::StrCat(
        count, " of ", comm.world_size(), " ranks hold ", what,
        " that differ from rank 0's", same ? "" : " (this one among them)"));
  }
  return absl::OkStatus();
}

absl::Status CheckReplicasEqual(distributed::Communicator& comm,
                                const model::LoraAdapter& adapter) {
  Sha256 hash;
  for (const at::Tensor& p : adapter.Parameters()) {
    const at::Tensor host = p.detach().cpu().contiguous();
    hash.Update(absl::string_view(static_cast<const char*>(host.data_ptr()),
                                  host.nbytes()));
  }
  absl::Status same =
      SameOnEveryRank(comm, hash.HexDigest(), "adapter weights");
  if (same.code() == absl::StatusCode::kDataLoss) {
    return absl::DataLossError(absl::StrCat(
        same.message(), "; the replicas diverged and the run stops"));
  }
  return same;
}

absl::StatusOr<uint64_t> ShareVersion(distributed::Communicator& comm,
                                      uint64_t version,
                                      const absl::Status& local) {
  at::Tensor values = OnDevice(
      comm,
      std::vector<int64_t>{comm.rank() == 0 ? static_cast<int64_t>(version) : 0,
                           local.ok() ? 0 : 1});
  if (absl::Status s = comm.AllReduce({values}, distributed::ReduceOp::kMax);
      !s.ok()) {
    return s;
  }
  const at::Tensor host = values.cpu();
  if (!local.ok()) return local;
  if (host[1].item<int64_t>() != 0) {
    return absl::AbortedError(
        "another rank failed to publish the adapter (its log says why)");
  }
  return static_cast<uint64_t>(host[0].item<int64_t>());
}

absl::Status SumOverRanks(distributed::Communicator& comm,
                          std::vector<int64_t>& values) {
  at::Tensor sums = OnDevice(comm, values);
  if (absl::Status s = comm.AllReduce({sums}); !s.ok()) return s;
  const at::Tensor host = sums.cpu();
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = host[static_cast<int64_t>(i)].item<int64_t>();
  return absl::OkStatus();
}

absl::StatusOr<GenerateOutcome> AgreeOnGenerate(distributed::Communicator& comm,
                                                const absl::Status& local) {
  GenerateOutcome mine = GenerateOutcome::kFailed;
  if (local.ok()) {
    mine = GenerateOutcome::kServed;
  } else if (local.code() == absl::StatusCode::kFailedPrecondition) {
    mine = GenerateOutcome::kRefused;
  } else if (local.code() == absl::StatusCode::kCancelled) {
    mine = GenerateOutcome::kStopping;
  }
  at::Tensor worst =
      OnDevice(comm, std::vector<int64_t>{static_cast<int64_t>(mine)});
  if (absl::Status s = comm.AllReduce({worst}, distributed::ReduceOp::kMax);
      !s.ok()) {
    return s;
  }
  return static_cast<GenerateOutcome>(worst.cpu().item<int64_t>());
}

absl::StatusOr<RankSetup> JoinRanks(const TrainConfig& config,
                                    const distributed::LaunchEnv& launch) {
  if (config.prompts_per_step < launch.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rollout.prompts_per_step (", config.prompts_per_step,
        ") must be at least the number of ranks (", launch.world_size,
        "): each rank generates a share of the prompts"));
  }
  if (!config.rollout_addresses.empty() && config.colocated) {
    return absl::InvalidArgumentError(
        "rollout.colocated with rollout.addresses: ranks that share rollout "
        "servers cannot each put them to sleep (set rollout.colocated: false)");
  }
  absl::StatusOr<TrainConfig> rank = RankConfig(config, launch);
  if (!rank.ok()) return rank.status();
  distributed::CommunicatorOptions options;
  options.timeout = absl::Seconds(config.distributed_timeout_s);
  if (absl::StartsWith(rank->device, "cuda")) {
    options.cuda = true;
    int index = 0;
    const size_t colon = rank->device.find(':');
    if (colon != std::string::npos &&
        !absl::SimpleAtoi(rank->device.substr(colon + 1), &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.device: bad device \"", rank->device, "\""));
    }
    options.cuda_device = index;
  }
  absl::StatusOr<std::unique_ptr<distributed::Communicator>> comm =
      distributed::Communicator::Create(launch, options);
  if (!comm.ok()) return comm.status();
  return RankSetup{*std::move(rank), *std::move(comm)};
}

absl::StatusOr<RunDirectory> OpenSharedRunDirectory(
    distributed::Communicator& comm, const TrainConfig& config, bool resume) {
  RunDirectory run;
  absl::Status opened = absl::OkStatus();
  int64_t checkpoint_step = -1;
  if (comm.rank() == 0) {
    absl::StatusOr<RunDirectory> own = OpenRunDirectory(config, resume);
    if (own.ok()) {
      run = *std::move(own);
      if (run.latest_checkpoint.has_value())
        checkpoint_step = CheckpointStepOf(*run.latest_checkpoint);
    } else {
      opened = own.status();
    }
  }
  absl::StatusOr<int64_t> start =
      ShareRunStart(comm, opened, checkpoint_step, TrainConfigToYaml(config));
  if (!start.ok()) return start.status();
  if (comm.rank() != 0) {
    run.path = config.output_dir + "/" + config.run_name;
    if (*start >= 0) {
      run.latest_checkpoint = CheckpointDir(run.path + "/checkpoints", *start);
    }
  }
  return run;
}

}  // namespace microrl::learner
