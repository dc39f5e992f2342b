#!/usr/bin/env bash
# Downloads a model from the Hugging Face Hub, at a pinned revision, into a model directory
# the project reads (config.json, tokenizer files, safetensors weights), and checks it.
#
#   deploy/fetch_model.sh HUB_ID REVISION DIR
#   deploy/fetch_model.sh Qwen/Qwen3-0.6B c1899de289a04d12100db370d81485cdf75e47ca models/Qwen3-0.6B
#
# The paper's presets name their model's HUB_ID and REVISION (model.hub_id, model.revision);
# `learner study` calls this for every missing model before its first run starts.
# Gated models (Llama) need a token with access: HF_TOKEN, or `hf auth login`. HF_ENDPOINT
# picks a mirror. Offline, it fails at once and says where to put the directory instead.
# The download goes to DIR.partial (resumed by the next try if the network cuts it) and is
# renamed to DIR only once every check passed; a download that fails them is removed.
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
HUB_ID=$1 REVISION=$2 DIR=${3%/}
VENV=${MICRORL_VENV:-/opt/microrl/venv}
ENDPOINT=${HF_ENDPOINT:-https://huggingface.co}
HF="$VENV/bin/hf"
put_it_there="put the Hugging Face model directory of $HUB_ID (revision $REVISION: config.json, tokenizer files, *.safetensors) at $(realpath -m "$DIR")"

if [ -f "$DIR/config.json" ]; then
  echo "fetch_model: $DIR has a model already (config.json); nothing to do"
  exit 0
fi
[ -x "$HF" ] || { echo "fetch_model: $HF is missing (bash deploy/setup.sh --deps-only)" >&2; exit 1; }

# Reachable at all? One short request, so that offline fails now, not after a timeout per file.
# The token (HF_TOKEN, or the one `hf auth login` saved) goes in a header read from stdin,
# not on curl's command line where ps would show it.
token=${HF_TOKEN:-}
token_file=${HF_TOKEN_PATH:-${HF_HOME:-$HOME/.cache/huggingface}/token}
[ -z "$token" ] && [ -r "$token_file" ] && token=$(cat "$token_file")
code=$(printf '%s\n' "${token:+Authorization: Bearer $token}" | \
  curl -sS --connect-timeout 10 --max-time 30 -o /dev/null -w '%{http_code}' -H @- \
  "$ENDPOINT/api/models/$HUB_ID/revision/$REVISION" 2>/tmp/fetch_model.$$ || true)
reason=$(cat /tmp/fetch_model.$$ 2>/dev/null); rm -f /tmp/fetch_model.$$
case "$code" in
  200) ;;
  000) echo "fetch_model: cannot reach $ENDPOINT (${reason:-no answer}): offline? $put_it_there" >&2
       exit 3 ;;
  401|403) echo "fetch_model: $HUB_ID is gated: accept its licence on the Hub and set HF_TOKEN (or hf auth login), or $put_it_there" >&2
       exit 3 ;;
  404) echo "fetch_model: $ENDPOINT has no $HUB_ID at revision $REVISION" >&2; exit 3 ;;
  *) echo "fetch_model: $ENDPOINT answered HTTP $code for $HUB_ID@$REVISION; $put_it_there" >&2
     exit 3 ;;
esac

PARTIAL="$DIR.partial"
mkdir -p "$PARTIAL"
echo "fetch_model: downloading $HUB_ID@$REVISION into $DIR"
# Only what the project reads: no original/ checkpoints, no other weight formats.
"$HF" download "$HUB_ID" --revision "$REVISION" --local-dir "$PARTIAL" \
  --include '*.json' --include '*.safetensors' --include '*.txt' --include '*.jinja' \
  --include '*.model' --exclude 'original/*' || {
  echo "fetch_model: the download of $HUB_ID failed (above; gated models need a token with access: HF_TOKEN or hf auth login); run again to resume it, or $put_it_there" >&2
  exit 1; }

# The checks: config.json parses, a tokenizer is there, every weight file the index names
# exists, and every safetensors header parses with sizes that match the file. Files that
# fail are not kept (a download cut by the network is resumed; a wrong one is not).
"$VENV/bin/python" - "$PARTIAL" <<'PY' || { rm -rf "$PARTIAL"; exit 1; }
import json, os, struct, sys
d = sys.argv[1]
def fail(msg):
    sys.exit(f"fetch_model: {d}: {msg}")
try:
    json.load(open(os.path.join(d, "config.json")))
except (OSError, ValueError) as e:
    fail(f"config.json: {e}")
if not any(os.path.exists(os.path.join(d, f)) for f in ("tokenizer.json", "tokenizer.model")):
    fail("no tokenizer.json or tokenizer.model")
index = os.path.join(d, "model.safetensors.index.json")
files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
         else ["model.safetensors"])
for name in files:
    path = os.path.join(d, name)
    if not os.path.exists(path):
        fail(f"{name} is missing")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > size - 8:
            fail(f"{name}: header length {n} beyond the file ({size} bytes)")
        header = json.loads(f.read(n))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
              default=0)
    if 8 + n + end != size:
        fail(f"{name}: {size} bytes, the header describes {8 + n + end} (truncated?)")
print(f"fetch_model: checked config.json, the tokenizer and {len(files)} weight file(s)")
PY
printf '{"hub_id": "%s", "revision": "%s"}\n' "$HUB_ID" "$REVISION" > "$PARTIAL/.microrl-source.json"
rm -rf "$PARTIAL/.cache"
# DIR may exist empty (docker creates a missing bind-mount source): replace it, never nest.
[ -d "$DIR" ] && { rmdir "$DIR" 2>/dev/null || {
  echo "fetch_model: $DIR exists and is not empty; the download is in $PARTIAL" >&2; exit 1; }; }
mv -T "$PARTIAL" "$DIR"
echo "fetch_model: $DIR is ready"
