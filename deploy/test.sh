#!/usr/bin/env bash
# Sets up (deploy/setup.sh: dependencies, configure, build) and runs the test suite.
# Extra arguments go to ctest, e.g.  deploy/test.sh -L unit   or   deploy/test.sh -R Prometheus
# The test labelled `compose` (builds the Docker image and runs docker-compose: a Docker
# daemon and ~20 minutes) runs only when asked for:  deploy/test.sh -L compose
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MICRORL_BUILD_DIR:-$REPO/build}
bash "$REPO/deploy/setup.sh"
cd "$BUILD_DIR"
exclude=(-LE '^compose$')
for arg in "$@"; do
  [[ "$arg" == *compose* ]] && exclude=()
done
ctest --output-on-failure --no-tests=error --parallel "$(nproc)" "${exclude[@]}" "$@"
