"""`learner report` on a study of two runs, checked against the files it read.

  report_test.py --learner BIN

Writes a study directory as the learner writes runs (metrics.jsonl with a step rewritten
by a resume and a torn last line, config.yaml, eval/eval.json with per-problem counts)
for two LoRA ranks of a model the paper reports, runs `learner report` on it, and checks:
  - every figure's PNG and JSON exist, the PNGs are images of a sensible size, and each
    plotted line equals the metrics it came from (the resumed step's last line, the torn
    line skipped), smoothed by an exponential moving average computed here;
  - Table 1 equals eval.json's pass@k, with the standard error recomputed here from the
    per-problem counts;
  - Table 2's relative entropy change is recomputed here (first and last tenth);
  - the paper's published values are printed beside the matching model and rank, and only
    there; index.html is self-contained (no external references).
Also: a directory with no run exits non-zero, naming it.
"""
import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import require  # noqa: E402


def write_run(run_dir, model, rank, steps, seed):
    rng = random.Random(seed)
    os.makedirs(os.path.join(run_dir, "eval"))
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(f"run:\n  name: r{rank}\nmodel:\n  path: models/{model}\nlora:\n  rank: {rank}\n")
    rows = []
    for step in range(1, steps + 1):
        row = {"step": step, "epoch": 0, "reward_mean": rng.random(),
               "reward/correct": rng.random(), "reward/format": rng.random(),
               "accuracy": rng.random(), "entropy": 1.0 + rng.random(),
               "response_length_mean": 100 * rng.random(), "clipped_ratio": rng.random(),
               "kl": rng.random() / 10, "approx_kl": rng.random() / 100,
               "clip_fraction_low": rng.random() / 10, "clip_fraction_high": rng.random() / 10,
               "dual_clip_fraction": 0.0, "grad_norm": rng.random(),
               "time/generate": rng.random(), "time/score": 0.01, "time/update": rng.random(),
               "time/publish": 0.05, "time/step": 2 * rng.random()}
        rows.append(row)
    lines = [json.dumps(r) for r in rows]
    # A resume rewrote step 5 (the later line wins) and validation every 10 steps.
    resumed = dict(rows[4], entropy=9.5, reward_mean=0.123)
    lines.insert(7, json.dumps(resumed))
    for step in range(10, steps + 1, 10):
        lines.append(json.dumps({"step": step, "eval": "validation",
                                 "val_pass@1": rng.random()}))
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n" + '{"step": 999, "reward_me')  # torn
    rows[4] = resumed
    correct = {ds: [rng.randint(0, 16) for _ in range(30)] for ds in ("aime24", "amc23")}
    evals = []
    for config in ("final", "base"):
        for ds, counts in correct.items():
            counts = counts if config == "final" else [max(0, c - 3) for c in counts]
            row = {"dataset": ds, "problems": 30, "samples": 16, "adapter_version": 9}
            for k in (1, 8, 16):
                row[f"pass@{k}"] = sum(pass_at_k(16, c, k) for c in counts) / 30
            row.update({"accuracy": 0.1, "mean_reward": 0.1, "mean_length": 10.0,
                        "mean_entropy": 1.0, "correct": counts,
                        "model": "base" if config == "base" else "runs/x/adapter"})
            evals.append(row)
    with open(os.path.join(run_dir, "eval", "eval.json"), "w") as f:
        json.dump(evals, f)
    return rows, evals


def pass_at_k(n, c, k):
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--learner", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report_test_") as study:
        runs = {}
        for rank, seed in ((8, 1), (64, 2)):
            runs[rank] = write_run(os.path.join(study, "runs", f"qwen-r{rank}"),
                                   "Qwen2.5-1.5B-Instruct", rank, 40, seed)
        base_rows, _ = write_run(os.path.join(study, "runs", "base-r8"), "Qwen2.5-1.5B", 8,
                                 40, 3)
        proc = subprocess.run([args.learner, "report", study], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300)
        require(proc.returncode == 0, f"learner report exits 0: {proc.stdout[-800:]}")
        out = os.path.join(study, "report")
        require("report/index.html" in proc.stdout, "it prints where the report is")

        from PIL import Image
        stems = ["reward", "accuracy", "validation", "entropy", "length", "clipped", "kl",
                 "clip_fractions", "grad_norm", "time"]
        for stem in stems:
            png = os.path.join(out, "figures", stem + ".png")
            require(os.path.exists(png) and os.path.exists(png[:-4] + ".json"),
                  f"figure {stem}: PNG and JSON")
            with Image.open(png) as image:
                require(image.size[0] >= 500 and image.size[1] >= 300,
                      f"figure {stem} is an image of {image.size}")
            with open(png[:-4] + ".json") as f:
                data = json.load(f)
            lines = [line for panel in data["panels"] for line in panel["lines"]]
            require(len(lines) >= 3 and {line["run"] for line in lines} ==
                  {"runs/qwen-r8", "runs/qwen-r64", "runs/base-r8"},
                  f"figure {stem}: a line per run ({len(lines)} lines)")
            panels = {panel["model"] for panel in data["panels"]}
            require(panels == {"Qwen2.5-1.5B", "Qwen2.5-1.5B-Instruct"},
                  f"figure {stem}: a panel per model {sorted(panels)}")
            for line in lines:
                rows = (base_rows if line["run"] == "runs/base-r8"
                        else runs[line["rank"]][0])
                if stem == "validation":
                    with open(os.path.join(study, line["run"], "metrics.jsonl")) as f:
                        vals = [json.loads(x) for x in f.read().splitlines()[:-1]]
                    want = [(v["step"], v["val_pass@1"]) for v in vals
                            if v.get("eval") == "validation"]
                else:
                    want = [(r["step"], r[line["metric"]]) for r in rows]
                got = list(zip(line["x"], line["y"]))
                ok = got == want
                ema, smoothed = None, []
                for _, y in want:
                    ema = y if ema is None else 0.8 * ema + 0.2 * y
                    smoothed.append(ema)
                ok = ok and all(abs(a - b) < 1e-12 for a, b in zip(line["smoothed"],
                                                                   smoothed))
                if not ok:
                    require(False, f"figure {stem}, {line['label']}: plotted data equals "
                          "the metrics")
        require(True, "every plotted line equals its metrics (the resumed step's last line, "
              "the torn line skipped) and their moving average")

        with open(os.path.join(out, "tables.json")) as f:
            tables = json.load(f)
        t1 = [e for e in tables["table1"] if e["model"] != "Qwen2.5-1.5B"]
        require(len(t1) == 8, f"Table 1 has a row per run, dataset and config ({len(t1)})")
        for entry in t1:
            evals = runs[entry["rank"]][1]
            row = next(r for r in evals if r["dataset"] == entry["dataset"] and
                       (r["model"] == "base") == (entry["config"] == "baseline"))
            for k, v in entry["pass"].items():
                estimates = [pass_at_k(16, c, int(k)) for c in row["correct"]]
                mean = sum(estimates) / len(estimates)
                se = math.sqrt(sum((e - mean) ** 2 for e in estimates) /
                               (len(estimates) - 1) / len(estimates))
                require(v["value"] == row[f"pass@{k}"] and abs(v["se"] - se) < 1e-12,
                      f"Table 1 r{entry['rank']} {entry['dataset']} {entry['config']} "
                      f"pass@{k} {100 * v['value']:.1f} ± {100 * v['se']:.1f}")
        require(len(tables["table2"]) == 3, f"Table 2 has a row per run "
              f"({len(tables['table2'])})")
        base = [e for e in tables["table2"] if e["model"] == "Qwen2.5-1.5B"]
        require(len(base) == 1 and base[0]["paper_change_percent"] is None,
              "the base Qwen2.5-1.5B gets none of the paper's (instruct) values")
        for entry in (e for e in tables["table2"] if e["model"] != "Qwen2.5-1.5B"):
            rows = runs[entry["rank"]][0]
            window = len(rows) // 10
            first = sum(r["entropy"] for r in rows[:window]) / window
            last = sum(r["entropy"] for r in rows[-window:]) / window
            want = 100 * (last - first) / first
            require(entry["window"] == window and abs(entry["change_percent"] - want) < 1e-9,
                  f"Table 2 r{entry['rank']}: {entry['change_percent']:+.2f}% over "
                  f"windows of {window} (recomputed {want:+.2f}%)")
            paper = {8: -5.5, 64: -62.1}[entry["rank"]]
            require(entry["paper_change_percent"] == paper,
                  f"Table 2 r{entry['rank']}: the paper's {paper:+.1f}% beside it")
        md = open(os.path.join(out, "report.md")).read()
        require("-62.1% (paper)" in md and "(paper, best rank)" in md.split("## Table 2")[0],
              "report.md labels the paper's values as the paper's")
        require(not any("(paper" in line for line in md.splitlines()
                      if "| runs/base-r8 |" in line),
              "no paper value beside the base model's rows")
        page = open(os.path.join(out, "index.html")).read()
        require("data:image/png;base64," in page and "http://" not in page and
              "https://" not in page and page.count("<img") == len(stems),
              "index.html inlines every figure and references nothing outside")

        empty = os.path.join(study, "empty")
        os.makedirs(empty)
        proc = subprocess.run([args.learner, "report", empty], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)
        require(proc.returncode != 0 and "no run here" in proc.stdout,
              f"a directory without runs: {proc.stdout.strip()}")

        # The report program the learner execs can be stopped: SIGTERM is not left
        # blocked by the learner's signal handling (the kernel's SigBlk mask of the
        # exec'd process).
        proc = subprocess.Popen([args.learner, "report", study], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        mask = None
        deadline = time.time() + 30
        while time.time() < deadline and proc.poll() is None:
            try:
                if "python" in os.readlink(f"/proc/{proc.pid}/exe"):
                    with open(f"/proc/{proc.pid}/status") as f:
                        mask = int([l for l in f if l.startswith("SigBlk:")][0].split()[1], 16)
                    break
            except (OSError, IndexError):
                pass
            time.sleep(0.005)
        proc.terminate()
        code = proc.wait(timeout=30)
        require(mask is not None and not mask & (1 << (signal.SIGTERM - 1)),
                f"learner report's program does not block SIGTERM (SigBlk {mask}); "
                f"SIGTERM ends it (exit {code})")
    print("learner report: all checks passed")


if __name__ == "__main__":
    main()
