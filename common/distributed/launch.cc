#include "common/distributed/launch.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace microrl::distributed {
namespace {

// An integer variable in [min, max]; `fallback` when unset and not required.
absl::StatusOr<int64_t> IntVariable(const EnvReader& env, const char* name,
                                    std::optional<int64_t> fallback,
                                    int64_t min, int64_t max) {
  const std::optional<std::string> value = env(name);
  if (!value.has_value()) {
    if (fallback.has_value()) return *fallback;
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is not set (the launcher must set it)"));
  }
  int64_t parsed = 0;
  if (!absl::SimpleAtoi(*value, &parsed) || parsed < min || parsed > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "=\"", *value, "\": expected an integer in [", min,
                     ", ", max, "]"));
  }
  return parsed;
}

absl::Status CheckRanks(const LaunchEnv& launch, const char* rank_name,
                        const char* size_name) {
  if (launch.rank >= launch.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(rank_name, "=", launch.rank,
                                                   " is not below ", size_name,
                                                   "=", launch.world_size));
  }
  if (launch.local_rank >= launch.local_world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the local rank ", launch.local_rank,
        " is not below the local world size ", launch.local_world_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<LaunchEnv> FromTorchrun(const EnvReader& env) {
  LaunchEnv launch;
  launch.launcher = "torchrun";
  constexpr int64_t kMaxRanks = 1 << 20;
  absl::StatusOr<int64_t> world =
      IntVariable(env, "WORLD_SIZE", std::nullopt, 1, kMaxRanks);
  if (!world.ok()) return world.status();
  launch.world_size = static_cast<int>(*world);
  absl::StatusOr<int64_t> rank =
      IntVariable(env, "RANK", std::nullopt, 0, kMaxRanks);
  if (!rank.ok()) return rank.status();
  launch.rank = static_cast<int>(*rank);
  absl::StatusOr<int64_t> local =
      IntVariable(env, "LOCAL_RANK", std::nullopt, 0, kMaxRanks);
  if (!local.ok()) return local.status();
  launch.local_rank = static_cast<int>(*local);
  absl::StatusOr<int64_t> local_world =
      IntVariable(env, "LOCAL_WORLD_SIZE", launch.world_size, 1, kMaxRanks);
  if (!local_world.ok()) return local_world.status();
  launch.local_world_size = static_cast<int>(*local_world);
  if (absl::Status s = CheckRanks(launch, "RANK", "WORLD_SIZE"); !s.ok())
    return s;
  const std::optional<std::string> addr = env("MASTER_ADDR");
  if (!addr.has_value() || addr->empty()) {
    return absl::InvalidArgumentError(
        "MASTER_ADDR is not set (the launcher must set it)");
  }
  launch.master_addr = *addr;
  absl::StatusOr<int64_t> port =
      IntVariable(env, "MASTER_PORT", std::nullopt, 1, 65535);
  if (!port.ok()) return port.status();
  launch.master_port = static_cast<int>(*port);
  if (const std::optional<std::string> agent =
          env("TORCHELASTIC_USE_AGENT_STORE");
      agent.has_value()) {
    const std::string lower = absl::AsciiStrToLower(*agent);
    if (lower == "true" || lower == "1") {
      launch.agent_store = true;
    } else if (lower != "false" && lower != "0" && !lower.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("TORCHELASTIC_USE_AGENT_STORE=\"", *agent,
                       "\": expected True or False"));
    }
  }
  absl::StatusOr<int64_t> restarts =
      IntVariable(env, "TORCHELASTIC_RESTART_COUNT", 0, 0, 1 << 30);
  if (!restarts.ok()) return restarts.status();
  launch.restart_count = static_cast<int>(*restarts);
  return launch;
}

absl::StatusOr<LaunchEnv> FromSlurm(const EnvReader& env) {
  LaunchEnv launch;
  launch.launcher = "slurm";
  constexpr int64_t kMaxRanks = 1 << 20;
  absl::StatusOr<int64_t> world =
      IntVariable(env, "SLURM_NTASKS", std::nullopt, 1, kMaxRanks);
  if (!world.ok()) return world.status();
  launch.world_size = static_cast<int>(*world);
  absl::StatusOr<int64_t> rank =
      IntVariable(env, "SLURM_PROCID", std::nullopt, 0, kMaxRanks);
  if (!rank.ok()) return rank.status();
  launch.rank = static_cast<int>(*rank);
  absl::StatusOr<int64_t> local =
      IntVariable(env, "SLURM_LOCALID", std::nullopt, 0, kMaxRanks);
  if (!local.ok()) return local.status();
  launch.local_rank = static_cast<int>(*local);
  // SLURM_NTASKS_PER_NODE is set only with --ntasks-per-node; it may read
  // "4" or "4(x2)".
  launch.local_world_size = launch.world_size;
  if (std::optional<std::string> per_node = env("SLURM_NTASKS_PER_NODE");
      per_node.has_value()) {
    int64_t count = 0;
    const std::string head = per_node->substr(0, per_node->find('('));
    if (!absl::SimpleAtoi(head, &count) || count < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SLURM_NTASKS_PER_NODE=\"", *per_node, "\": expected a count"));
    }
    launch.local_world_size = static_cast<int>(count);
  }
  if (absl::Status s = CheckRanks(launch, "SLURM_PROCID", "SLURM_NTASKS");
      !s.ok()) {
    return s;
  }
  if (const std::optional<std::string> addr = env("MASTER_ADDR");
      addr.has_value() && !addr->empty()) {
    launch.master_addr = *addr;
  } else {
    std::optional<std::string> nodes = env("SLURM_JOB_NODELIST");
    if (!nodes.has_value()) nodes = env("SLURM_NODELIST");
    if (!nodes.has_value()) {
      return absl::InvalidArgumentError(
          "neither MASTER_ADDR nor SLURM_JOB_NODELIST is set");
    }
    absl::StatusOr<std::string> host = FirstSlurmHost(*nodes);
    if (!host.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("SLURM_JOB_NODELIST: ", host.status().message()));
    }
    launch.master_addr = *host;
  }
  if (env("MASTER_PORT").has_value()) {
    absl::StatusOr<int64_t> port =
        IntVariable(env, "MASTER_PORT", std::nullopt, 1, 65535);
    if (!port.ok()) return port.status();
    launch.master_port = static_cast<int>(*port);
  } else {
    absl::StatusOr<int64_t> job =
        IntVariable(env, "SLURM_JOB_ID", std::nullopt, 0, INT64_MAX);
    if (!job.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MASTER_PORT is not set and no port follows from SLURM_JOB_ID: ",
          job.status().message()));
    }
    launch.master_port = SlurmDefaultPort(*job);
  }
  return launch;
}

}  // namespace

int SlurmDefaultPort(int64_t job_id) {
  return 15000 + static_cast<int>(job_id % 20000);
}

absl::StatusOr<std::string> FirstSlurmHost(absl::string_view node_list) {
  // The first entry: up to a comma outside brackets.
  std::string first;
  int depth = 0;
  for (char c : node_list) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0) break;
    if (c == ',' && depth == 0) break;
    first.push_back(c);
  }
  if (depth != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unbalanced brackets in \"", node_list, "\""));
  }
  // Each bracketed range list contributes its first value, as written (zero
  // padding kept): "n[08-11]x[2,4]" -> "n08x2".
  std::string host;
  for (size_t i = 0; i < first.size(); ++i) {
    if (first[i] != '[') {
      host.push_back(first[i]);
      continue;
    }
    const size_t close = first.find(']', i);
    const std::string inside = first.substr(i + 1, close - i - 1);
    const std::string value = inside.substr(0, inside.find_first_of("-,"));
    if (value.empty() ||
        value.find_first_not_of("0123456789") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad range \"[", inside, "]\" in \"", node_list, "\""));
    }
    host += value;
    i = close;
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no host in \"", node_list, "\""));
  }
  return host;
}

absl::StatusOr<LaunchEnv> ReadLaunchEnv(const EnvReader& env) {
  if (env("WORLD_SIZE").has_value()) return FromTorchrun(env);
  if (env("SLURM_NTASKS").has_value()) return FromSlurm(env);
  return LaunchEnv{};
}

absl::StatusOr<LaunchEnv> ReadLaunchEnv() {
  return ReadLaunchEnv([](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  });
}

}  // namespace microrl::distributed
