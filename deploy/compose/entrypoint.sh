#!/usr/bin/env bash
# Entry point of the microrl image under docker compose (deploy/docker-compose.yml):
#   entrypoint.sh prepare|reward_service|rollout_server|learner
# Reads deploy/.env's variables. Without MICRORL_MODEL it runs the CPU demo: `prepare`
# makes the tiny model and data in runs/demo, the rollout server serves that model and
# the learner runs the demo's warm-up, GRPO and before/after evaluation against the
# other two containers. With MICRORL_MODEL it trains models/$MICRORL_MODEL with the
# preset configs/paper/$MICRORL_PRESET.yaml. Services listen on all interfaces inside
# the compose network; only Prometheus and Grafana publish ports on the host.
set -euo pipefail
SRC=/opt/microrl/src
BIN=$SRC/build
PY=${MICRORL_VENV:-/opt/microrl/venv}/bin/python
DEMO=/workspace/runs/demo
DEVICE=${MICRORL_DEVICE:-cpu}
role=${1:?usage: entrypoint.sh prepare|reward_service|rollout_server|learner}

model_dir() {
  if [ -n "${MICRORL_MODEL:-}" ]; then
    local dir=/workspace/models/$MICRORL_MODEL
    [ -f "$dir/config.json" ] || { echo "entrypoint: $dir/config.json not found (MICRORL_MODEL in deploy/.env; models go in ./models)" >&2; exit 2; }
    echo "$dir"
  else
    echo "$DEMO/model"
  fi
}

case "$role" in
  prepare)
    if [ -z "${MICRORL_MODEL:-}" ]; then
      "$PY" "$SRC/deploy/demo/demo.py" --out "$DEMO" --seed "${MICRORL_SEED:-0}" --stage assets
    else
      model_dir >/dev/null
    fi ;;
  reward_service)
    exec "$BIN/reward_service/reward_service" --host=0.0.0.0 --port=50052 --metrics_port=9402 ;;
  rollout_server)
    exec "$BIN/rollout_server/rollout_server" --host=0.0.0.0 --port=50051 --metrics_port=9401 \
      --model="$(model_dir)" --device="$DEVICE" ${MICRORL_ROLLOUT_FLAGS:-} ;;
  learner)
    if [ -z "${MICRORL_MODEL:-}" ]; then
      exec "$PY" "$SRC/deploy/demo/demo.py" --out "$DEMO" --seed "${MICRORL_SEED:-0}" \
        --stage train --rollout_address=rollout_server:50051 --reward_address=reward_service:50052 \
        --learner_host=0.0.0.0 --learner_port=50053 --learner_metrics_port=9403 --prometheus=
    fi
    preset=$SRC/configs/paper/${MICRORL_PRESET:?set MICRORL_PRESET in deploy/.env}.yaml
    [ -f "$preset" ] || { echo "entrypoint: no preset $preset" >&2; exit 2; }
    overrides="model.path=$(model_dir);model.device=$DEVICE;run.output_dir=/workspace/runs"
    overrides+=";data.train=/workspace/data/${MICRORL_TRAIN:-math_train.jsonl}"
    overrides+=";eval.path=/workspace/data/${MICRORL_EVAL:-math500.jsonl};eval.data_dir=/workspace/data"
    overrides+=";rollout.address=rollout_server:50051;reward.address=reward_service:50052"
    [ -n "${MICRORL_SET:-}" ] && overrides+=";$MICRORL_SET"
    resume=()
    [ -d "/workspace/runs/$(basename "$preset" .yaml)/checkpoints" ] && resume=(--resume)
    exec "$BIN/learner/learner" --host=0.0.0.0 --port=50053 --metrics_port=9403 \
      --config="$preset" --set="$overrides" "${resume[@]}" ;;
  *)
    echo "entrypoint: unknown role '$role'" >&2; exit 2 ;;
esac
