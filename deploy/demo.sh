#!/usr/bin/env bash
# The CPU demo (README's first command): sets up and builds (deploy/setup.sh), then runs
# deploy/demo/demo.py: a tiny model created here is warmed up on worked examples, trained
# with GRPO against reward_service and rollout_server (scraped by a local Prometheus),
# and evaluated on held-out problems before and after. About 5 minutes on 2 cores after
# the build; deterministic for a given --seed.
#
#   deploy/demo.sh                      the full demo into runs/demo
#   deploy/demo.sh --quick              a shortened run (what the e2e test runs)
#   deploy/demo.sh --python_reward      score with reward_service/examples/python_reward_server.py
#   deploy/demo.sh --check_dashboard    also run every query of dashboards/microrl.json
#   deploy/demo.sh --help               all options (--seed, --out, --grpo_steps, ...)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MICRORL_VENV:-/opt/microrl/venv}
BUILD_DIR=${MICRORL_BUILD_DIR:-$REPO/build}
case "${1:-}" in
  -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
             exec "$VENV/bin/python" "$REPO/deploy/demo/demo.py" --help ;;
esac
bash "$REPO/deploy/setup.sh"
exec "$VENV/bin/python" "$REPO/deploy/demo/demo.py" --build_dir "$BUILD_DIR" "$@"
