#!/usr/bin/env bash
# Sets up (deploy/setup.sh: dependencies, configure, build) and runs the test suite.
# Extra arguments go to ctest, e.g.  deploy/test.sh -L unit   or   deploy/test.sh -R Prometheus
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MICRORL_BUILD_DIR:-$REPO/build}
bash "$REPO/deploy/setup.sh"
cd "$BUILD_DIR"
ctest --output-on-failure --no-tests=error --parallel "$(nproc)" "$@"
