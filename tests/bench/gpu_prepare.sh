#!/usr/bin/env bash
# Builds bench programs here and copies them, with the shared libraries they need that a
# GPU machine lacks (everything but LibTorch, CUDA and the C/C++ runtimes), into
# .gpu_carry/ (kept out of git by .git/info/exclude). Run a GPU script with
# carry: [".gpu_carry"] afterwards.
#   bash tests/bench/gpu_prepare.sh model_bench rollout_bench
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CARRY="$REPO/.gpu_carry"
ninja -C "$REPO/build" "$@"
mkdir -p "$CARRY/lib"
for bin in "$@"; do
  cp "$REPO/build/tests/bench/$bin" "$CARRY/"
  ldd "$CARRY/$bin" | awk '/=> \// {print $3}' \
    | grep -v -E '/torch/|/nvidia/|libc\.so|libm\.so|libstdc\+\+|libgcc_s|libpthread|libdl\.so|librt\.so|ld-linux' \
    | xargs -r -I{} cp -L {} "$CARRY/lib/"
done
grep -qxF '/.gpu_carry/' "$REPO/.git/info/exclude" 2>/dev/null ||
  echo '/.gpu_carry/' >> "$REPO/.git/info/exclude"
du -sh "$CARRY"
