"""Reward throughput: microrl against math-verify on the same completions (the
corpus of tests/reward_service/reward_oracle.py: equivalent and perturbed forms of
the shared data's answers in <think>...</think> completions, each once boxed and once
in a free-text style with no \\boxed{}, so free-text extraction is timed too).

  reward_bench.py [--shared DIR] [--bench_bin BIN] [--train 400]
Prints items/s of math-verify (parse + verify, one thread), of microrl on one
thread and on all cores, and the ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reward_service"))
import reward_oracle  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default="/work/shared")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--bench_bin", default=os.path.join(HERE, "../../build/tests/bench/reward_bench"))
    args = parser.parse_args()
    from math_verify import parse, verify

    cases = [(reward_oracle.completion(c["form"], c["style"]), c["gold"])
             for c in reward_oracle.build_cases(args.shared, args.train, seed=5)]
    corpus = os.path.join(tempfile.mkdtemp(prefix="reward_bench."), "corpus.jsonl")
    with open(corpus, "w", encoding="utf-8") as f:
        for text, answer in cases:
            f.write(json.dumps({"completion": text, "ground_truth": answer}) + "\n")

    start = time.perf_counter()
    mv_correct = 0
    for text, answer in cases:
        try:
            mv_correct += bool(verify(parse("\\boxed{" + answer + "}"), parse(text)))
        except Exception:
            pass
    mv_rate = len(cases) / (time.perf_counter() - start)
    print(f"corpus: {len(cases)} completions; math-verify {mv_rate:9.1f} items/s "
          f"(one thread), {mv_correct} correct")
    for label, threads in (("one thread", 1), (f"all {os.cpu_count()} cores", 0)):
        out = subprocess.run([args.bench_bin, f"--corpus={corpus}", f"--threads={threads}"],
                             capture_output=True, text=True, check=True).stdout
        result = json.loads(out)
        rate = result["items"] / result["seconds"]
        print(f"microrl {label:14s} {rate:11.1f} items/s, {result['correct']} correct, "
              f"ratio to math-verify {rate / mv_rate:.0f}x")


if __name__ == "__main__":
    main()
