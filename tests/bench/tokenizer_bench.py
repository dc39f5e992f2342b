"""Encode throughput: microrl's tokenizer against Hugging Face `tokenizers` on the
same texts (the problems and solutions of the MATH train split), one thread each.

  tokenizer_bench.py [--corpus FILE.jsonl] [--shared DIR] [--bench_bin BIN]
Prints MB/s and tokens/s for both, per tokenizer (Qwen3, Llama-3), and the ratio:
"cold" is one pass with empty caches, "warm" further passes after one untimed pass.
"""
import argparse
import json
import os
import subprocess
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default="/work/shared")
    parser.add_argument("--corpus", default="")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--bench_bin", default=os.path.join(
        here, "../../build/tests/bench/tokenizer_bench"))
    args = parser.parse_args()
    corpus = args.corpus or os.path.join(args.shared, "data", "math_train.jsonl")
    texts = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            texts += [record[k] for k in ("problem", "solution") if isinstance(record.get(k), str)]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {corpus}, {len(texts)} texts, {megabytes:.2f} MB, {args.passes} passes")
    for name in ("qwen3", "llama3"):
        path = os.path.join(args.shared, "tokenizers", name, "tokenizer.json")
        for label, warm, passes in (("cold", False, 1), ("warm", True, args.passes)):
            # encode_batch on one thread (RAYON_NUM_THREADS=1): the Rust loop without a
            # Python call per text, so the comparison is of the tokenizers themselves.
            hf = Tokenizer.from_file(path)
            if warm:
                hf.encode_batch(texts, add_special_tokens=False)  # fills its cache
            tokens = 0
            start = time.perf_counter()
            for _ in range(passes):
                tokens += sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False))
            hf_seconds = time.perf_counter() - start
            out = subprocess.run([args.bench_bin, f"--tokenizer={path}", f"--corpus={corpus}",
                                  f"--passes={passes}", f"--warmup={str(warm).lower()}"],
                                 capture_output=True, text=True, check=True).stdout
            ours = json.loads(out)
            if ours["tokens"] != tokens:
                raise SystemExit(f"{name}: token counts differ: {ours['tokens']} vs {tokens}")
            hf_rate = passes * megabytes / hf_seconds
            our_rate = passes * megabytes / ours["seconds"]
            print(f"{name:6s} {label}: tokenizers {hf_rate:6.2f} MB/s "
                  f"{tokens / hf_seconds:9.0f} tok/s   microrl {our_rate:6.2f} MB/s "
                  f"{ours['tokens'] / ours['seconds']:9.0f} tok/s   ratio {our_rate / hf_rate:.2f}")

if __name__ == "__main__":
    main()
