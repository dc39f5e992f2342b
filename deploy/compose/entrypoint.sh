#!/usr/bin/env bash
# Entry point of the microrl image under docker compose (deploy/docker-compose.yml):
#   entrypoint.sh prepare|reward_service|rollout_server|learner
# Reads deploy/.env's variables. Without MICRORL_MODEL it runs the CPU demo: `prepare`
# makes the tiny model and data in runs/demo, the rollout server serves that model and
# the learner runs the demo's warm-up, GRPO and before/after evaluation against the
# other two containers (every replica of rollout_server: `--scale rollout_server=N`
# spreads each step's groups over N servers). With MICRORL_MODEL it trains models/$MICRORL_MODEL with the
# preset configs/paper/$MICRORL_PRESET.yaml. Services listen on all interfaces inside
# the compose network; only Prometheus and Grafana publish ports on the host. Binding
# all interfaces without a client credential is refused unless --insecure_allow_remote
# is given: it is given here because the compose network is private to these
# containers. MICRORL_AUTH_TOKEN in deploy/.env adds a shared token on top: `prepare`
# then makes a private CA and a certificate for the three service names in runs/tls,
# every service serves TLS and requires the token, and every client (learner, its
# evaluations, the healthchecks) trusts that CA (MICRORL_TLS_CA) and sends the token.
REMOTE=--insecure_allow_remote
TLS_DIR=/workspace/runs/tls
SERVER_TLS=()
if [ -n "${MICRORL_AUTH_TOKEN:-}" ]; then
  SERVER_TLS=(--tls_cert="$TLS_DIR/server.pem" --tls_key="$TLS_DIR/server.key")
  export MICRORL_TLS_CA=$TLS_DIR/ca.pem
fi

# A CA and one certificate naming the three services (kept across restarts).
make_tls() {
  [ -n "${MICRORL_AUTH_TOKEN:-}" ] || return 0
  [ -f "$TLS_DIR/server.pem" ] && return 0
  mkdir -p "$TLS_DIR.new"
  (
    cd "$TLS_DIR.new"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=microrl compose CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=microrl" -keyout server.key \
      -out server.csr 2>/dev/null
    echo "subjectAltName=DNS:rollout_server,DNS:reward_service,DNS:learner,DNS:localhost,IP:127.0.0.1" \
      > san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out server.pem 2>/dev/null
    rm -f ca.key server.csr san.ext ca.srl
  )
  rm -rf "$TLS_DIR" && mv "$TLS_DIR.new" "$TLS_DIR"
}
set -euo pipefail
SRC=/opt/microrl/src
BIN=$SRC/build
PY=${MICRORL_VENV:-/opt/microrl/venv}/bin/python
DEMO=/workspace/runs/demo
DEVICE=${MICRORL_DEVICE:-cpu}
role=${1:?usage: entrypoint.sh prepare|reward_service|rollout_server|learner|health}

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
    make_tls
    if [ -z "${MICRORL_MODEL:-}" ]; then
      # Made once: a restart (docker-compose stop, then up) resumes on the same files;
      # `docker-compose down -v` removes them.
      if [ -f "$DEMO/model/config.json" ] && [ -f "$DEMO/grpo.yaml" ]; then
        echo "prepare: the demo's model and data are in $DEMO already"
      else
        "$PY" "$SRC/deploy/demo/demo.py" --out "$DEMO" --seed "${MICRORL_SEED:-0}" --stage assets
      fi
    else
      model_dir >/dev/null
    fi ;;
  reward_service)
    exec "$BIN/reward_service/reward_service" --host=0.0.0.0 "$REMOTE" --port=50052 \
      --metrics_port=9402 "${SERVER_TLS[@]}" ;;
  rollout_server)
    model=$(model_dir) || exit 2
    exec "$BIN/rollout_server/rollout_server" --host=0.0.0.0 "$REMOTE" --port=50051 \
      --metrics_port=9401 "${SERVER_TLS[@]}" \
      --model="$model" --device="$DEVICE" ${MICRORL_ROLLOUT_FLAGS:-} ;;
  learner)
    if [ -z "${MICRORL_MODEL:-}" ]; then
      # --resume: after a stop, the finished stages are kept and GRPO resumes from its
      # last checkpoint. MICRORL_DEMO_ARGS: extra demo flags (docker-compose.yml).
      # shellcheck disable=SC2086
      exec "$PY" "$SRC/deploy/demo/demo.py" --out "$DEMO" --seed "${MICRORL_SEED:-0}" \
        --stage train --resume ${MICRORL_DEMO_ARGS:-} --rollout_address=dns:rollout_server:50051 \
        --reward_address=reward_service:50052 \
        --learner_host=0.0.0.0 --insecure_allow_remote --learner_port=50053 \
        --learner_metrics_port=9403 --prometheus= "${SERVER_TLS[@]/#/--learner_arg=}"
    fi
    preset=$SRC/configs/paper/${MICRORL_PRESET:?set MICRORL_PRESET in deploy/.env}.yaml
    [ -f "$preset" ] || { echo "entrypoint: no preset $preset" >&2; exit 2; }
    model=$(model_dir) || exit 2
    overrides="model.path=$model;model.device=$DEVICE;run.output_dir=/workspace/runs"
    overrides+=";data.train=/workspace/data/${MICRORL_TRAIN:-math_train.jsonl}"
    overrides+=";eval.path=/workspace/data/${MICRORL_EVAL:-math500.jsonl};eval.data_dir=/workspace/data"
    # Every replica of rollout_server (docker-compose up --scale rollout_server=N).
    overrides+=';rollout.addresses=["dns:rollout_server:50051"];reward.address=reward_service:50052'
    [ -n "${MICRORL_SET:-}" ] && overrides+=";$MICRORL_SET"
    resume=()
    [ -d "/workspace/runs/$(basename "$preset" .yaml)/checkpoints" ] && resume=(--resume)
    exec "$BIN/learner/learner" --host=0.0.0.0 "$REMOTE" --port=50053 --metrics_port=9403 \
      "${SERVER_TLS[@]}" \
      --config="$preset" --set="$overrides" "${resume[@]}" ;;
  health)
    # Healthchecks: `entrypoint.sh health rollout|reward` (the token and CA from above).
    exec "$BIN/tools/microrl/microrl" status "--${2:?health rollout|reward}=127.0.0.1:$( \
      [ "$2" = rollout ] && echo 50051 || echo 50052)" ;;
  *)
    echo "entrypoint: unknown role '$role'" >&2; exit 2 ;;
esac
