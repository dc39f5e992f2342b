#!/usr/bin/env bash
# Sets up (deploy/setup.sh) and runs microrl locally: starts reward_service, rollout_server
# and learner on loopback, waits until all three are healthy, prints their status, and
# keeps them running until Ctrl-C (then stops them cleanly).
#
#   deploy/run.sh           run until Ctrl-C
#   deploy/run.sh --once    print the status, stop the services, exit (0 if all were healthy)
#
# Ports: gRPC 50051 (rollout), 50052 (reward), 50053 (learner); Prometheus /metrics on
# 9401, 9402, 9403. Logs: runs/local/*.log (MICRORL_RUN_DIR to change).
# MICRORL_MODEL=<Hugging Face model dir> makes the rollout server load that model
# (MICRORL_DEVICE=cuda to run it on the GPU); without it the rollout server has no model.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MICRORL_BUILD_DIR:-$REPO/build}
RUN_DIR=${MICRORL_RUN_DIR:-$REPO/runs/local}
ONCE=0
for arg in "$@"; do
  case "$arg" in
    --once) ONCE=1 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

bash "$REPO/deploy/setup.sh"
mkdir -p "$RUN_DIR"
PIDS=()
stop_all() {
  [ "${#PIDS[@]}" -gt 0 ] || return 0
  echo "[run] stopping"
  kill -TERM "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start() {  # start NAME BINARY FLAGS...
  local name=$1 binary=$2
  shift 2
  rm -f "$RUN_DIR/$name.ready"
  "$BUILD_DIR/$binary" --ready_file="$RUN_DIR/$name.ready" "$@" >"$RUN_DIR/$name.log" 2>&1 &
  PIDS+=($!)
  echo "[run] started $name (pid $!, log $RUN_DIR/$name.log)"
}
start reward_service reward_service/reward_service --port=50052 --metrics_port=9402
ROLLOUT_ARGS=(--port=50051 --metrics_port=9401 --device="${MICRORL_DEVICE:-cpu}")
[ -n "${MICRORL_MODEL:-}" ] && ROLLOUT_ARGS+=(--model="$MICRORL_MODEL")
start rollout_server rollout_server/rollout_server "${ROLLOUT_ARGS[@]}"
start learner learner/learner --port=50053 --metrics_port=9403 \
  --rollout_address=127.0.0.1:50051 --reward_address=127.0.0.1:50052

for name in reward_service rollout_server learner; do
  for _ in $(seq 600); do
    [ -f "$RUN_DIR/$name.ready" ] && break
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "[run] a service exited; its log:" >&2; \
        tail -n 5 "$RUN_DIR"/*.log >&2; exit 1; }
    done
    sleep 0.1
  done
  [ -f "$RUN_DIR/$name.ready" ] || { echo "[run] $name not ready after 60 s" >&2; exit 1; }
done

echo
status=0
"$BUILD_DIR/tools/microrl/microrl" status --rollout=127.0.0.1:50051 --reward=127.0.0.1:50052 \
  --learner=127.0.0.1:50053 || status=$?
echo
echo "[run] metrics: http://127.0.0.1:9401/metrics (rollout), :9402 (reward), :9403 (learner)"
[ "$ONCE" = 1 ] && exit "$status"
echo "[run] running; Ctrl-C stops all three"
wait
