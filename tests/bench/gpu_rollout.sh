#!/usr/bin/env bash
# Rollout throughput on a GPU for the Qwen2.5-1.5B shape in bfloat16 with random weights:
# 64 sequences (8 prompts x G=8), 512-token prompts, 1024 new tokens, EOS ignored.
# Prints microrl's tokens/s, transformers' on the same input, the ratio, and each as a
# fraction of the memory-bandwidth roofline (tests/bench/rollout_bench.py).
#
#   here:         bash tests/bench/gpu_rollout.sh --prepare
#   on the GPU:   bash tests/bench/gpu_rollout.sh [--skip_transformers]
#                 (run with carry: [".gpu_carry"])
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CARRY="$REPO/.gpu_carry"

if [ "${1:-}" = "--prepare" ]; then
  exec bash "$REPO/tests/bench/gpu_prepare.sh" rollout_bench
fi

[ -x "$CARRY/rollout_bench" ] || { echo "run '$0 --prepare' first (and carry .gpu_carry)" >&2; exit 1; }
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PYTHONUNBUFFERED=1 python3 "$REPO/tests/bench/rollout_bench.py" --shape qwen2.5-1.5b \
  --device cuda --prompts 8 --group 8 --prompt_len 512 --new_tokens 1024 \
  --bench_bin "$CARRY/rollout_bench" "$@"
