#!/usr/bin/env bash
# Builds tests/fuzz/reward_fuzz.cc with clang's libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer, seeds it with answers from the shared MATH data and
# model-like completions, and runs it.
#   tests/fuzz/run_reward_fuzz.sh [SECONDS]   (default 600; writes build-fuzz/)
# Exit status 0: no crash, leak, sanitizer report or input slower than 10 s.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECONDS_TO_RUN=${1:-600}
OUT="$REPO/build-fuzz"
SHARED=${MICRORL_SHARED_DIR:-$REPO/../shared}
[ -d "$SHARED/data" ] || SHARED=/work/shared
if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
fi
mkdir -p "$OUT/corpus"
ABSL=$(pkg-config --cflags --libs absl_strings absl_str_format absl_time absl_status)
clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$REPO" "$REPO/tests/fuzz/reward_fuzz.cc" \
  "$REPO"/reward_service/{extraction,math_answer,scorer,think_format}.cc \
  $ABSL -o "$OUT/reward_fuzz"
# Seeds: reference answers, and completions wrapping them.
python3 - "$SHARED" "$OUT/corpus" <<'PY'
import json, os, sys
shared, corpus = sys.argv[1], sys.argv[2]
n = 0
for name in ("math500", "aime24", "amc23"):
    for line in open(os.path.join(shared, "data", name + ".jsonl"), encoding="utf-8"):
        answer = json.loads(line)["answer"]
        seed = f"<|im_start|>assistant\n\x01<think>\nwork\n</think>\n\nSo \\boxed{{{answer}}}.\x01{answer}"
        with open(os.path.join(corpus, f"seed{n}"), "w", encoding="utf-8") as f:
            f.write(seed)
        n += 1
PY
cd "$OUT"
exec ./reward_fuzz -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -timeout=10 \
  -rss_limit_mb=4096 -print_final_stats=1 corpus
