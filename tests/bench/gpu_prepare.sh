#!/usr/bin/env bash
# Builds programs here and copies them, with the shared libraries they need that a GPU
# machine lacks (everything but LibTorch, CUDA and the C/C++ runtimes), into .gpu_carry/
# (kept out of git by .git/info/exclude). Run a GPU script with carry: [".gpu_carry"]
# afterwards. Arguments are ninja targets: a benchmark under tests/bench, or a path
# relative to the build directory (rollout_server/rollout_server, tests/device_test).
#   bash tests/bench/gpu_prepare.sh model_bench rollout_server/rollout_server
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD="$REPO/build"
CARRY="$REPO/.gpu_carry"
targets=()
for target in "$@"; do targets+=("$(basename "$target")"); done
ninja -C "$BUILD" "${targets[@]}"
mkdir -p "$CARRY/lib"
for target in "$@"; do
  if [[ "$target" == */* ]]; then bin="$BUILD/$target"; else bin="$BUILD/tests/bench/$target"; fi
  cp "$bin" "$CARRY/"
  ldd "$bin" | awk '/=> \// {print $3}' \
    | grep -v -E '/torch/|/nvidia/|libc\.so|libm\.so|libstdc\+\+|libgcc_s|libpthread|libdl\.so|librt\.so|ld-linux' \
    | xargs -r -I{} cp -L {} "$CARRY/lib/"
done
grep -qxF '/.gpu_carry/' "$REPO/.git/info/exclude" 2>/dev/null ||
  echo '/.gpu_carry/' >> "$REPO/.git/info/exclude"
du -sh "$CARRY"
