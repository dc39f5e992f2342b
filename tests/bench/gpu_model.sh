#!/usr/bin/env bash
# Decoder throughput on a GPU: microrl against transformers for the Qwen2.5-1.5B shape
# in bfloat16 with random weights (tests/bench/model_bench.py --device cuda).
#
# The GPU machines (see /work/.library/device) have PyTorch 2.11.0+cu130 but none of
# this project's C++ dependencies, and no registry. So:
#   here:             bash tests/bench/gpu_model.sh --prepare
#                     (tests/bench/gpu_prepare.sh: builds model_bench, copies it and the
#                     libraries it needs into .gpu_carry/, kept out of git)
#   on the GPU:       bash tests/bench/gpu_model.sh      (run with carry: [".gpu_carry"])
# model_bench links LibTorch 2.11.0, the same version as the GPU machine's, and finds
# it there through LD_LIBRARY_PATH.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CARRY="$REPO/.gpu_carry"

if [ "${1:-}" = "--prepare" ]; then
  exec bash "$REPO/tests/bench/gpu_prepare.sh" model_bench
fi

[ -x "$CARRY/model_bench" ] || { echo "run '$0 --prepare' first (and carry .gpu_carry)" >&2; exit 1; }
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PYTHONUNBUFFERED=1 python3 "$REPO/tests/bench/model_bench.py" --shape qwen2.5-1.5b \
  --device cuda --batch 8 --seq 1024 --prompt 128 --new_tokens 128 --iters 3 \
  --bench_bin "$CARRY/model_bench"
