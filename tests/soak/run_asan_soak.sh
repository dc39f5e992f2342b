#!/usr/bin/env bash
# Builds rollout_server, reward_service and learner with AddressSanitizer and
# UndefinedBehaviorSanitizer into build-asan/ (MICRORL_ASAN_BUILD_DIR), then runs the
# soak (tests/soak/soak.py): the demo's GRPO run for MINUTES (default 10) with the
# services killed and restarted at random moments. The warm-up uses the normal build
# (build/, made by deploy/setup.sh). Exit status 0: no sanitizer report, clean exits,
# no lost or repeated step, and the reward still rose.
#   tests/soak/run_asan_soak.sh [MINUTES]
# (ctest's asan_soak, label soak, runs 3 minutes after a 1,000-step warm-up)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${MICRORL_VENV:-/opt/microrl/venv}
OUT=${MICRORL_ASAN_BUILD_DIR:-$REPO/build-asan}
if [ ! -f "$OUT/build.ninja" ]; then
  cmake -S "$REPO" -B "$OUT" -G Ninja -Wno-dev -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMICRORL_PYTHON:FILEPATH="$VENV/bin/python" \
    "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize=vptr" \
    "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined" >/dev/null
fi
ninja -C "$OUT" rollout_server/rollout_server reward_service/reward_service learner/learner
exec "$VENV/bin/python" "$REPO/tests/soak/soak.py" --build_dir "$OUT" --source_dir "$REPO" \
  --minutes "${1:-10}" --warmup_learner "${MICRORL_BUILD_DIR:-$REPO/build}/learner/learner" \
  --warmup_steps "${MICRORL_SOAK_WARMUP_STEPS:-1500}"
