#!/usr/bin/env bash
# Data-parallel training on one node (docs/scaling.md, Mode A): starts one rollout server
# per rank (rank r's on port ROLLOUT_PORT + r and, on GPUs, on cuda:r), a reward service
# unless one is given, waits until they are ready, then runs the learner's ranks under
# torchrun. Each rank trains against its own rollout server; ranks all-reduce their LoRA
# gradients over Gloo (CPU) or NCCL (GPU). Stops the servers when torchrun ends. With
# --rollout_addresses the ranks share rollout servers that run elsewhere (Modes A and B
# together: rank 0 publishes to all of them) and none is started here.
#
#   deploy/launch_ranks.sh --nproc=N --model=DIR --config=run.yaml [options] [-- learner flags]
#
# Options:
#   --nproc=N             ranks (and rollout servers) on this node (required)
#   --model=DIR           the model the rollout servers load (required unless
#                         --rollout_addresses)
#   --config=FILE         the learner's run configuration (required)
#   --device=cpu|cuda     where rollout servers and ranks run (default cpu)
#   --rollout_port=P      rank 0's rollout server port (default 50051)
#   --rollout_addresses=A,B,...
#                         use these rollout servers (host:port or dns:name:port, every
#                         address a name has), shared by all ranks, instead of starting any
#   --reward_address=H:P  use this reward service instead of starting one
#   --rollout_flag=F      one more flag for every rollout server (repeatable)
#   --max_restarts=K      torchrun's --max-restarts (default 0); the learner gets --resume
#   --nnodes=M --node_rank=K --master_addr=HOST
#                         several nodes (run this script once on each, e.g. by srun with one
#                         task per node; deploy/slurm/mode_a.sbatch): torchrun's static
#                         rendezvous at HOST:$MASTER_PORT (default 29500), this node K of M
#   --build_dir=DIR       where the binaries are (default <repo>/build)
#   --log_dir=DIR         server logs (default runs/ranks)
# Everything after "--" goes to every learner rank. The learner's rollout.address and
# reward.address are set with --set; the ranks find their own rollout server by port.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=$REPO/build
NPROC="" MODEL="" CONFIG="" DEVICE=cpu ROLLOUT_PORT=50051 REWARD_ADDRESS="" MAX_RESTARTS=0
ROLLOUT_ADDRESSES=""
NNODES=1 NODE_RANK=0 MASTER_ADDR=127.0.0.1
LOG_DIR=runs/ranks
ROLLOUT_FLAGS=()
LEARNER_FLAGS=()
usage() { sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nproc=*) NPROC=${1#*=} ;;
    --model=*) MODEL=${1#*=} ;;
    --config=*) CONFIG=${1#*=} ;;
    --device=*) DEVICE=${1#*=} ;;
    --rollout_port=*) ROLLOUT_PORT=${1#*=} ;;
    --rollout_addresses=*) ROLLOUT_ADDRESSES=${1#*=} ;;
    --reward_address=*) REWARD_ADDRESS=${1#*=} ;;
    --rollout_flag=*) ROLLOUT_FLAGS+=("${1#*=}") ;;
    --max_restarts=*) MAX_RESTARTS=${1#*=} ;;
    --nnodes=*) NNODES=${1#*=} ;;
    --node_rank=*) NODE_RANK=${1#*=} ;;
    --master_addr=*) MASTER_ADDR=${1#*=} ;;
    --build_dir=*) BUILD_DIR=${1#*=} ;;
    --log_dir=*) LOG_DIR=${1#*=} ;;
    --) shift; LEARNER_FLAGS=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "launch_ranks.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in NPROC CONFIG $([ -z "$ROLLOUT_ADDRESSES" ] && echo MODEL); do
  [ -n "${!v}" ] || { echo "launch_ranks.sh: --$(echo "$v" | tr A-Z a-z)= is required" >&2; exit 2; }
done
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || { echo "launch_ranks.sh: --nproc=$NPROC: not a count" >&2; exit 2; }
case "$DEVICE" in cpu|cuda) ;; *) echo "launch_ranks.sh: --device=$DEVICE: cpu or cuda" >&2; exit 2 ;; esac
# The venv's Python runs torchrun (the learner itself is not Python).
PYTHON=$(sed -n 's/^MICRORL_PYTHON:FILEPATH=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
PYTHON=${PYTHON:-${MICRORL_VENV:-/opt/microrl/venv}/bin/python}

mkdir -p "$LOG_DIR"
PIDS=()
stop_all() {
  [ "${#PIDS[@]}" -gt 0 ] || return 0
  kill -TERM "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

wait_ready() {  # wait_ready NAME PID
  for _ in $(seq 1200); do
    [ -f "$LOG_DIR/$1.ready" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "launch_ranks.sh: $1 exited:" >&2; tail -n 20 "$LOG_DIR/$1.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "launch_ranks.sh: $1 not ready after 120 s (log $LOG_DIR/$1.log)" >&2
  exit 1
}

if [ -z "$REWARD_ADDRESS" ]; then
  rm -f "$LOG_DIR/reward_service.ready"
  "$BUILD_DIR/reward_service/reward_service" --port=0 --metrics_port=0 \
    --ready_file="$LOG_DIR/reward_service.ready" >"$LOG_DIR/reward_service.log" 2>&1 &
  PIDS+=($!)
  wait_ready reward_service $!
  port=$(sed -n 's/.*"grpc_port": *\([0-9]*\).*/\1/p' "$LOG_DIR/reward_service.ready")
  REWARD_ADDRESS=127.0.0.1:$port
fi
if [ -n "$ROLLOUT_ADDRESSES" ]; then
  # Shared servers: rollout.addresses as a YAML list of quoted entries.
  list=\"${ROLLOUT_ADDRESSES//,/\",\"}\"
  SETS="rollout.addresses=[$list]"
  echo "[launch_ranks] rollout servers $ROLLOUT_ADDRESSES (shared), reward service $REWARD_ADDRESS"
else
  for ((r = 0; r < NPROC; r++)); do
    device=$DEVICE
    [ "$DEVICE" = cuda ] && device=cuda:$r
    rm -f "$LOG_DIR/rollout_server$r.ready"
    "$BUILD_DIR/rollout_server/rollout_server" --model="$MODEL" --device="$device" \
      --port=$((ROLLOUT_PORT + r)) --metrics_port=0 \
      --ready_file="$LOG_DIR/rollout_server$r.ready" \
      "${ROLLOUT_FLAGS[@]}" >"$LOG_DIR/rollout_server$r.log" 2>&1 &
    PIDS+=($!)
  done
  for ((r = 0; r < NPROC; r++)); do wait_ready "rollout_server$r" "${PIDS[-NPROC + r]}"; done
  echo "[launch_ranks] $NPROC rollout servers on ports $ROLLOUT_PORT..$((ROLLOUT_PORT + NPROC - 1))," \
       "reward service $REWARD_ADDRESS"
  SETS="rollout.address=127.0.0.1:$ROLLOUT_PORT;distributed.rollout_port_per_rank=true"
fi

RESUME=()
[ "$MAX_RESTARTS" -gt 0 ] && RESUME=(--resume)
SETS="$SETS;reward.address=$REWARD_ADDRESS"
[ "$DEVICE" = cuda ] && SETS="$SETS;model.device=cuda"
status=0
"$PYTHON" -m torch.distributed.run --nproc_per_node="$NPROC" --no-python \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" \
  --max-restarts="$MAX_RESTARTS" --master_addr="$MASTER_ADDR" \
  --master_port="${MASTER_PORT:-29500}" \
  "$BUILD_DIR/learner/learner" --config="$CONFIG" --set="$SETS" "${RESUME[@]}" \
  "${LEARNER_FLAGS[@]}" || status=$?
exit "$status"
