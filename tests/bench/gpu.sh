#!/usr/bin/env bash
# Issue 10's GPU measurements in one prepared run (target: under 8 minutes on an H100/H200
# with PyTorch 2.11.0+cu130, transformers and PEFT, and no registry):
#   0. the GPU memory cap (device_test: a 2 GiB tensor fails under a 1 GiB cap)
#   a. decode: tokens/s of 64 sequences (8 prompts x G=8), 512-token prompts, 1024 new
#      tokens, Qwen2.5-1.5B's shape in bf16, against transformers `generate` on the same GPU
#      and against the memory-bandwidth roofline (rollout_bench.py): the default (decode
#      windows of 8 steps, eager: the bench's flags are off unless named), single steps,
#      --cuda_graphs (on by default in rollout_server since the H200 run) and
#      --share_prompt_kv (off), how far their first completions agree, and
#      microrl's log-probs against transformers scoring the same tokens
#   b. training: tokens/s of one GRPO update, same shape, LoRA rank 256 (fp32 master
#      weights, bf16 compute), a GRPO-shaped batch (8 MATH prompts x 8 completions, lengths
#      log-normal up to a 1024-token cap), against transformers + PEFT padding it as TRL's
#      GRPOTrainer does, on the same GPU and batch (train_bench.py); microrl packed with
#      shared prompts (the default), packed without sharing, and padded
#   i. (not in the default lists) training as b on the old batch of 16 equal-length
#      sequences of 512 + 1024 tokens
#   c. adapter publish latency, rank 256 (564 MiB in bf16), over gRPC, against PEFT's file
#      hand-off (publish_bench.py); then the CUDA IPC import's check of a real handle whose
#      size or offset claims 4 GiB past its allocation (refused, the server unharmed)
#   d. one full GRPO step of the paper's configuration (configs/paper/
#      qwen2.5-1.5b-instruct-r256.yaml, 3584-token responses, eager decode) with the three
#      services under a 48 GiB total cap: time per phase and peak memory per process (grpo_step.py)
#   e. three short GRPO steps with the rollout server on --cuda_graphs: graphs captured,
#      then kept across the adapter swaps of a run (a crash or failed step shows here)
#   g. NCCL at world size 1 (issue 19): the learner's Communicator on the GPU (its
#      self-test, then a rank-256 adapter's gradients all-reduced and checked), as a
#      data-parallel rank would run it (allreduce_bench)
#   f. (not in the default list) decode as in a, with a random rank-256 adapter on all
#      seven linear layers on both sides (transformers + PEFT `generate`), as a GRPO
#      rollout runs once the learner has published
#
#   here:         bash tests/bench/gpu.sh --prepare
#                 (builds; copies the programs, the libraries a GPU machine lacks and a Qwen
#                 tokenizer into .gpu_carry/, kept out of git)
#   on the GPU:   bash tests/bench/gpu.sh [SECTION...]     (device tool: carry [".gpu_carry"])
#                 SECTION: env a b c d e f g i (default: env a c g, whose limits add up to
#                 510 s, inside one 600 s device call; then `b d e`, 450 s, in a second
#                 call if the session's device time allows). Each section has its own time
#                 limit and a failing one does not stop the others. The log goes to
#                 $OUT/gpu.log when $OUT is set.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CARRY="$REPO/.gpu_carry"
PROGRAMS=(rollout_bench train_bench publish_bench allreduce_bench rollout_server/rollout_server
          reward_service/reward_service learner/learner tests/device_test)

if [ "${1:-}" = "--prepare" ]; then
  set -e
  rm -rf "$CARRY"
  bash "$REPO/tests/bench/gpu_prepare.sh" "${PROGRAMS[@]}"
  mkdir -p "$CARRY/tokenizer"
  cp "$REPO/../shared/tokenizers/qwen3/tokenizer.json" \
     "$REPO/../shared/tokenizers/qwen3/tokenizer_config.json" "$CARRY/tokenizer/"
  mkdir -p "$CARRY/data"
  cp "$REPO/../shared/data/math_train.jsonl" "$CARRY/data/"
  du -sh "$CARRY"
  exit 0
fi

for program in "${PROGRAMS[@]}"; do
  [ -x "$CARRY/$(basename "$program")" ] ||
    { echo "run '$0 --prepare' here first, and carry .gpu_carry" >&2; exit 1; }
done
# LibTorch and the CUDA runtime beside it (the programs were built against the same
# versions' copies here).
TORCH_LIBS=$(python3 -c '
import glob, os, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
dirs = [os.path.join(os.path.dirname(torch.__file__), "lib")]
dirs += sorted({os.path.dirname(p) for p in glob.glob(site + "/nvidia/*/lib/libcudart.so*")})
print(":".join(dirs))')
export LD_LIBRARY_PATH="$TORCH_LIBS:$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
LOG=${OUT:+$OUT/gpu.log}
LOG=${LOG:-/tmp/gpu.log}
WORK=$(mktemp -d /tmp/gpu_bench.XXXXXX)
MODEL="$WORK/model"   # one random Qwen2.5-1.5B-shaped model shared by every section
SECTIONS=("$@")
[ ${#SECTIONS[@]} -eq 0 ] && SECTIONS=(env a c g)
B="$REPO/tests/bench"

section() {  # section NAME LIMIT_S COMMAND...: runs and logs one section
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s) $(date +%T)"
  local start=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
}

{
  for s in "${SECTIONS[@]}"; do
    case $s in
      env)
        section env 120 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
          python3 -c 'import torch, transformers, peft; print(\"torch\", torch.__version__, \"transformers\", transformers.__version__, \"peft\", peft.__version__)';
          python3 -c 'import sys; sys.path.insert(0, \"$B\"); import torch; from bench_models import make_or_load; make_or_load(\"qwen2.5-1.5b\", \"$MODEL\", torch.bfloat16, load=False)';
          cp $CARRY/tokenizer/* $MODEL/;
          $CARRY/device_test --gtest_brief=1" ;;
      a)
        section decode 240 python3 "$B/rollout_bench.py" --shape qwen2.5-1.5b --device cuda \
          --prompts 8 --group 8 --prompt_len 512 --new_tokens 1024 --model_dir "$MODEL" \
          --variants default,decode_steps_per_sync=1,cuda_graphs,share_prompt_kv \
          --bench_bin "$CARRY/rollout_bench" ;;
      b)
        section training 150 python3 "$B/train_bench.py" --shape qwen2.5-1.5b --device cuda \
          --rank 256 --prompts 8 --group 8 --cap 1024 --micro_batch_tokens 8192 --breakdown \
          --data "$CARRY/data/math_train.jsonl" --tokenizer "$CARRY/tokenizer" \
          --iters 2 --model_dir "$MODEL" --bench_bin "$CARRY/train_bench" ;;
      i)
        section training_equal 100 python3 "$B/train_bench.py" --equal_length \
          --shape qwen2.5-1.5b --device cuda --rank 256 --batch 16 --prompt 512 \
          --completion 1024 --micro_batch_tokens 8192 \
          --iters 2 --model_dir "$MODEL" --bench_bin "$CARRY/train_bench" ;;
      c)
        section publish 90 python3 "$B/publish_bench.py" --shape qwen2.5-1.5b --device cuda \
          --rank 256 --iters 5 --model_dir "$MODEL" --rollout_server "$CARRY/rollout_server" \
          --bench_bin "$CARRY/publish_bench" ;;
      d)
        section grpo_step 200 python3 "$B/grpo_step.py" --device cuda --shape qwen2.5-1.5b \
          --budget_gib 48 --rollout_gib 12 --learner_gib 36 --steps 1 \
          --max_response_tokens 3584 --model_dir "$MODEL" --tokenizer_dir "$CARRY/tokenizer" \
          --bin_dir "$CARRY" --out "$WORK/grpo_step" --rollout_flags=--nocuda_graphs ;;
      e)
        section graphs_under_swaps 100 python3 "$B/grpo_step.py" --device cuda \
          --shape qwen2.5-1.5b --budget_gib 48 --rollout_gib 12 --learner_gib 36 --steps 3 \
          --max_response_tokens 256 --model_dir "$MODEL" --tokenizer_dir "$CARRY/tokenizer" \
          --bin_dir "$CARRY" --out "$WORK/grpo_graphs" --rollout_flags=--cuda_graphs ;;
      f)
        section decode_lora 200 python3 "$B/rollout_bench.py" --shape qwen2.5-1.5b \
          --device cuda --prompts 8 --group 8 --prompt_len 512 --new_tokens 1024 \
          --model_dir "$MODEL" --lora_rank 256 --variants default \
          --bench_bin "$CARRY/rollout_bench" ;;
      g)
        section nccl_world_1 60 env -u WORLD_SIZE -u RANK "$CARRY/allreduce_bench" \
          --device=cuda --rank=256 --iters=3 ;;
      *) echo "unknown section $s (env a b c d e f g)" ;;
    esac
  done
} 2>&1 | tee "$LOG"
