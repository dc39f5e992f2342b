#ifndef MICRORL_COMMON_DISTRIBUTED_LAUNCH_H_
#define MICRORL_COMMON_DISTRIBUTED_LAUNCH_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace microrl::distributed {

// Where this process sits in a multi-process job, as its launcher told it
// through the environment. No LibTorch, no c10d: plain parsing.
struct LaunchEnv {
  int rank = 0;
  int local_rank = 0;  // rank on this node (selects the GPU, the ports)
  int world_size = 1;
  int local_world_size = 1;
  std::string master_addr;  // host of the rendezvous store
  int master_port = 0;
  // torchrun's agent already hosts the store (TORCHELASTIC_USE_AGENT_STORE):
  // every rank, rank 0 included, connects as a client.
  bool agent_store = false;
  int restart_count = 0;  // TORCHELASTIC_RESTART_COUNT
  std::string launcher;   // "torchrun", "slurm", or "" for a single process

  bool distributed() const { return world_size > 1; }
};

// Reads a variable; nullopt when unset.
using EnvReader = std::function<std::optional<std::string>(const char* name)>;

// The launch from torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE,
// TORCHELASTIC_RESTART_COUNT) when WORLD_SIZE is set; else from Slurm's
// (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_NTASKS_PER_NODE, the first
// host of SLURM_JOB_NODELIST; MASTER_ADDR and MASTER_PORT win when set, the
// port otherwise derived from SLURM_JOB_ID) when SLURM_NTASKS is set; else a
// single process. A variable that is missing or malformed is an
// InvalidArgument naming it.
absl::StatusOr<LaunchEnv> ReadLaunchEnv(const EnvReader& env);

// The same from this process's environment.
absl::StatusOr<LaunchEnv> ReadLaunchEnv();

// The first host of a Slurm node list: "gpu[003-007,012],cpu1" -> "gpu003".
absl::StatusOr<std::string> FirstSlurmHost(absl::string_view node_list);

// The rendezvous port a Slurm job uses when MASTER_PORT is unset: one of
// [15000, 35000) chosen by the job id, so concurrent jobs rarely collide.
int SlurmDefaultPort(int64_t job_id);

}  // namespace microrl::distributed

#endif  // MICRORL_COMMON_DISTRIBUTED_LAUNCH_H_
