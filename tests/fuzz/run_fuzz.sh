#!/usr/bin/env bash
# Builds one libFuzzer target (clang, AddressSanitizer + UndefinedBehaviorSanitizer)
# and runs it on its committed seed corpus (tests/fuzz/corpus/<target>, copied, so new
# inputs do not dirty the checkout).
#
#   tests/fuzz/run_fuzz.sh TARGET [SECONDS]   (default 600; 0 = only replay the seeds)
#
# TARGET: reward (answer extraction, LaTeX parsing, equivalence), reward_arith
# (differential: exact arithmetic against GMP computing the same expression; fails on
# any wrong verdict, not only on crashes), safetensors (header
# parser and validator), tokenizer (encode/decode with a real tokenizer.json, decoding
# arbitrary ids, parsing hostile tokenizer.json files), chat_template (the Jinja subset
# over hostile templates and messages), model_files (config.json and JSONL problem sets).
# Builds into build-fuzz/ (MICRORL_FUZZ_DIR).
# Exit status 0: no crash, sanitizer report, leak, or input slower than 25 s (sanitizers
# slow the code 10-20x).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${1:?usage: run_fuzz.sh reward|reward_arith|safetensors|tokenizer|chat_template|model_files [SECONDS]}
SECONDS_TO_RUN=${2:-600}
OUT=${MICRORL_FUZZ_DIR:-$REPO/build-fuzz}
if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
fi
ABSL=$(pkg-config --cflags --libs absl_strings absl_str_format absl_time absl_status absl_statusor)
BASE=("$REPO"/common/base/{file,lines,logging}.cc)
JINJA=("$REPO"/common/tokenizer/jinja/{filters,globals,lexer,methods,nodes,parser,template,text,values}.cc)
case "$TARGET" in
  reward|reward_arith)
    SOURCES=("$REPO"/reward_service/{extraction,math_answer,scorer,think_format}.cc
             "$REPO"/reward_service/math/{compare,evaluate,normalize,parser,rational}.cc)
    LIBS=($(pkg-config --cflags --libs gmpxx gmp)) ;;
  safetensors)
    SOURCES=("$REPO"/common/safetensors/safetensors.cc "${BASE[@]}")
    LIBS=() ;;
  tokenizer|chat_template)
    SOURCES=("$REPO"/common/tokenizer/{tokenizer,unicode,chat_template}.cc "${JINJA[@]}" "${BASE[@]}")
    LIBS=($(pkg-config --cflags --libs libpcre2-8 libutf8proc)) ;;
  model_files)
    SOURCES=("$REPO"/common/model/config.cc "$REPO"/learner/data.cc
             "$REPO"/common/tokenizer/{tokenizer,unicode,chat_template}.cc "${JINJA[@]}" "${BASE[@]}")
    LIBS=($(pkg-config --cflags --libs libpcre2-8 libutf8proc)) ;;
  *) echo "run_fuzz.sh: unknown target '$TARGET'" >&2; exit 2 ;;
esac
mkdir -p "$OUT/obj"
BIN="$OUT/${TARGET}_fuzz"
FLAGS=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
# Each source is compiled once into build-fuzz/obj (shared by the targets that use it)
# and again only when it, or a header it includes (its .d file), changes.
stale() {  # stale OBJ
  [ -f "$1" ] && [ -f "$1.d" ] || return 0
  local dep
  for dep in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$1.d"); do
    [ "$dep" -nt "$1" ] && return 0
  done
  return 1
}
OBJECTS=()
for src in "$REPO/tests/fuzz/${TARGET}_fuzz.cc" "${SOURCES[@]}"; do
  obj="$OUT/obj/$(realpath --relative-to="$REPO" "$src" | tr / _).o"
  if stale "$obj"; then
    echo "[fuzz] compiling ${src#$REPO/}"
    clang++ "${FLAGS[@]}" -MMD -MF "$obj.d" -c -I"$REPO" $(pkg-config --cflags absl_strings) \
      "$src" -o "$obj"
  fi
  OBJECTS+=("$obj")
done
clang++ "${FLAGS[@]}" "${OBJECTS[@]}" $ABSL "${LIBS[@]}" -o "$BIN"
CORPUS="$OUT/corpus_$TARGET"
rm -rf "$CORPUS" && mkdir -p "$CORPUS"
cp "$REPO/tests/fuzz/corpus/$TARGET"/* "$CORPUS"/
# The tokenizer target encodes with the real Qwen3 tokenizer (NFC normalizer, added
# tokens, byte-level BPE) from the workplace's shared data.
SHARED=${MICRORL_SHARED_DIR:-$REPO/../shared}
[ -f "$SHARED/tokenizers/qwen3/tokenizer.json" ] || SHARED=/work/shared
export MICRORL_FUZZ_TOKENIZER=${MICRORL_FUZZ_TOKENIZER:-$SHARED/tokenizers/qwen3/tokenizer.json}
if [ "$TARGET" = tokenizer ] && [ ! -f "$MICRORL_FUZZ_TOKENIZER" ]; then
  echo "run_fuzz.sh: no tokenizer at $MICRORL_FUZZ_TOKENIZER (set MICRORL_FUZZ_TOKENIZER)" >&2
  exit 2
fi
cd "$OUT"
ARGS=(-max_len=65536 -timeout=25 -rss_limit_mb=4096 -print_final_stats=1)
if [ "$SECONDS_TO_RUN" = 0 ]; then
  exec "$BIN" "${ARGS[@]}" -runs=0 "$CORPUS"
fi
exec "$BIN" "${ARGS[@]}" -max_total_time="$SECONDS_TO_RUN" "$CORPUS"
