"""`learner report DIR`: figures and tables of one run, or of every run under DIR.

  report.py DIR [--out DIR/report] [--window N] [--smooth A]

A run is a directory holding metrics.jsonl (what the learner writes per step) and
config.yaml; eval/eval.json (the final `learner eval` or eval.final_datasets) is used when
there. DIR may be a run, a study of `learner study` (the runs its study.json lists) or any
directory above runs. What is there is read, so a live run can be reported; a torn last
line is skipped.

Writes into --out (default DIR/report):
  index.html   self-contained (figures inlined as PNG data), no network at view time
  report.md    the same tables, with the figures as files
  figures/*.png and, beside each, *.json: the data each panel plots (x, raw y, smoothed y
               per line), so a test or a reader can check a figure against the metrics
  tables.json  Table 1 and Table 2 as numbers

Figures: one panel per model, one line per run (labelled with its LoRA rank), raw (thin)
and smoothed (an exponential moving average, weight --smooth on the past), for reward
(total and per component), accuracy, validation pass@1, mean token entropy, response
length and clipped ratio, KL, clip fractions, grad norm and time per phase.
Table 1: pass@k per dataset from eval.json, the base model (with --compare_base) as the
baseline and the adapter as final, with the standard error of the mean over problems of
the unbiased per-problem estimate. Table 2: the relative change of mean token entropy
from the mean of the first --window steps to the mean of the last --window steps (default:
a tenth of the steps, at least 1; the paper does not state its windows). The paper's
published values (paper_tables.json) are printed beside the user's, labelled as the
paper's: Table 2's where model and rank match, Table 1's (its best rank) where the model
matches. `learner report DIR [--out=DIR]` runs this; --window and --smooth are options of
this script (python3 learner/report/report.py DIR --window N).
"""
import argparse
import base64
import html
import json
import math
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))

# (file stem, title, y label, [(metric key, line label)])
FIGURES = [
    ("reward", "Reward", "reward per completion",
     [("reward_mean", "total"), ("reward/correct", "correct"), ("reward/format", "format")]),
    ("accuracy", "Training accuracy", "fraction correct", [("accuracy", "accuracy")]),
    ("validation", "Validation pass@1", "pass@1 (greedy)", [("val_pass@1", "pass@1")]),
    ("entropy", "Mean token entropy", "nats per token", [("entropy", "entropy")]),
    ("length", "Response length", "tokens", [("response_length_mean", "mean")]),
    ("clipped", "Clipped responses", "fraction at the cap", [("clipped_ratio", "clipped")]),
    ("kl", "KL to the base model", "nats per token", [("kl", "kl"), ("approx_kl", "approx. KL (old vs new)")]),
    ("clip_fractions", "Clip fractions", "fraction of tokens",
     [("clip_fraction_low", "low"), ("clip_fraction_high", "high"),
      ("dual_clip_fraction", "dual")]),
    ("grad_norm", "Gradient norm", "L2 norm (before clipping)", [("grad_norm", "grad norm")]),
    ("time", "Time per phase", "seconds per step",
     [("time/generate", "generate"), ("time/score", "score"), ("time/update", "update"),
      ("time/publish", "publish"), ("time/step", "step")]),
]


def read_metrics(path):
    """Training lines (by step, the last line of a step wins: a resumed run rewrites it)
    and validation lines, from a metrics.jsonl that may be written to as we read."""
    train, validation = {}, {}
    with open(path, errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a live run
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                continue
            (validation if row.get("eval") == "validation" else train)[row["step"]] = row
    return ([train[s] for s in sorted(train)], [validation[s] for s in sorted(validation)])


def find_runs(root):
    """The runs under root; for a study (root/study.json, learner study), its runs in the
    study's order, not the helper runs its prepare steps made."""
    study = os.path.join(root, "study.json")
    if os.path.isfile(study):
        with open(study) as f:
            entries = json.load(f).get("runs", {}).values()
        return [e["run_dir"] for e in entries
                if os.path.isfile(os.path.join(e.get("run_dir", ""), "metrics.jsonl"))]
    runs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("report", "checkpoints"))
        if "metrics.jsonl" in filenames:
            runs.append(dirpath)
    return runs


def describe(run_dir, root):
    config = {}
    path = os.path.join(run_dir, "config.yaml")
    if os.path.exists(path):
        with open(path) as f:
            try:
                config = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                print(f"learner report: {path}: {e}; model and rank unknown",
                      file=sys.stderr)
    config = config if isinstance(config, dict) else {}
    model_section = config.get("model") if isinstance(config.get("model"), dict) else {}
    lora = config.get("lora") if isinstance(config.get("lora"), dict) else {}
    model = str(model_section.get("path") or "model").rstrip("/")
    rank = lora.get("rank")
    name = os.path.relpath(run_dir, root) if run_dir != root else os.path.basename(
        os.path.abspath(run_dir))
    return {"dir": run_dir, "name": name, "model": os.path.basename(model) or model,
            "rank": rank, "label": f"r{rank}" if rank is not None else name}


def smooth(values, weight):
    out, state = [], None
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
            continue
        state = v if state is None else weight * state + (1 - weight) * v
        out.append(state)
    return out


def relative_entropy_change(entropies, window):
    """(first-window mean, last-window mean, change in %) of a step series."""
    values = [v for v in entropies if v is not None]
    if not values:
        return None
    w = min(window, len(values))
    first = sum(values[:w]) / w
    last = sum(values[-w:]) / w
    return first, last, (100.0 * (last - first) / first if first else None)


def pass_at_k(n, c, k):
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def pass_at_k_with_se(row, k):
    """The mean over problems of the unbiased per-problem pass@k, and its standard error
    (from eval.json's per-problem counts; None when the file has none)."""
    value = row.get(f"pass@{k}")
    correct, n = row.get("correct"), row.get("samples")
    if not correct or not n or k > n:
        return value, None
    estimates = [pass_at_k(n, c, k) for c in correct]
    mean = sum(estimates) / len(estimates)
    if len(estimates) < 2:
        return mean, None
    var = sum((e - mean) ** 2 for e in estimates) / (len(estimates) - 1)
    return mean, math.sqrt(var / len(estimates))


# The paper's models under the names a model directory or Hub id has (lower case):
# exact names, so that a base model never takes its instruct sibling's values.
PAPER_MODELS = {
    "deepscaler-1.5b-preview": "deepscaler1.5b", "deepscaler-1.5b": "deepscaler1.5b",
    "qwen2.5-1.5b-instruct": "qwen2.51.5b", "qwen2.5-instruct-1.5b": "qwen2.51.5b",
    "llama-3.2-1b-instruct": "llama3.21b",
    "qwen2.5-math-1.5b": "qwen2.5math1.5b",
    "qwen3-0.6b": "qwen30.6b",
}


def paper_key(model):
    return PAPER_MODELS.get(model.lower().split("/")[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--out", default="")
    parser.add_argument("--window", type=int, default=0,
                        help="steps in Table 2's first and last windows (0: a tenth)")
    parser.add_argument("--smooth", type=float, default=0.8)
    args = parser.parse_args()
    root = os.path.abspath(args.dir)
    if not os.path.isdir(root):
        sys.exit(f"learner report: {args.dir}: not a directory")
    runs = [describe(r, root) for r in find_runs(root)]
    if not runs:
        sys.exit(f"learner report: {args.dir}: no run here (no metrics.jsonl below it)")
    out = os.path.abspath(args.out or os.path.join(root, "report"))
    figures_dir = os.path.join(out, "figures")
    os.makedirs(figures_dir, exist_ok=True)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for run in runs:
        run["train"], run["validation"] = read_metrics(os.path.join(run["dir"],
                                                                    "metrics.jsonl"))
    models = sorted({r["model"] for r in runs})
    runs.sort(key=lambda r: (r["model"], r["rank"] if r["rank"] is not None else 0,
                             r["name"]))

    figure_files = []
    for stem, title, ylabel, series in FIGURES:
        data = {"title": title, "x": "step", "y": ylabel, "smoothing": args.smooth,
                "panels": []}
        fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.2),
                                 squeeze=False)
        any_line = False
        for ax, model in zip(axes[0], models):
            panel = {"model": model, "lines": []}
            # One colour per run (rank), one line style per metric of the figure.
            colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
            styles = ["-", "--", ":", "-.", (0, (1, 1)), (0, (5, 1, 1, 1, 1, 1))]
            for index, run in enumerate(r for r in runs if r["model"] == model):
                colour = colours[index % len(colours)]
                rows = run["validation"] if stem == "validation" else run["train"]
                for which, (key, what) in enumerate(series):
                    style = styles[which % len(styles)]
                    points = [(row["step"], row[key]) for row in rows
                              if isinstance(row.get(key), (int, float))]
                    if not points:
                        continue
                    xs = [p[0] for p in points]
                    ys = [float(p[1]) for p in points]
                    sm = smooth(ys, args.smooth)
                    label = run["label"] if len(series) == 1 else f"{run['label']} {what}"
                    if stem == "validation":
                        # Few, sparse points: the measured values are the line (with
                        # markers); their moving average is drawn thin.
                        ax.plot(xs, ys, linewidth=2.0, marker="o", markersize=4,
                                color=colour, linestyle=style, label=label)
                        ax.plot(xs, sm, linewidth=0.8, alpha=0.4, color=colour,
                                linestyle=style)
                    else:
                        ax.plot(xs, ys, linewidth=0.8, alpha=0.3, color=colour,
                                linestyle=style)
                        ax.plot(xs, sm, linewidth=2.0, color=colour, linestyle=style,
                                label=label)
                    panel["lines"].append({"run": run["name"], "rank": run["rank"],
                                           "metric": key, "label": label, "x": xs,
                                           "y": ys, "smoothed": sm})
                    any_line = True
            ax.set_title(f"{title}: {model}")
            ax.set_xlabel("GRPO step")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            if len(panel["lines"]) > 6:  # many lines: the legend beside the panel
                ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            elif panel["lines"]:
                ax.legend(fontsize=8, loc="best")
            data["panels"].append(panel)
        if any_line:
            fig.tight_layout()
            png = os.path.join(figures_dir, stem + ".png")
            fig.savefig(png, dpi=110, bbox_inches="tight")
            with open(os.path.join(figures_dir, stem + ".json"), "w") as f:
                json.dump(data, f)
            figure_files.append((stem, title))
        plt.close(fig)

    # Table 1 and Table 2.
    with open(os.path.join(HERE, "paper_tables.json")) as f:
        paper = json.load(f)
    table1 = []
    for run in runs:
        path = os.path.join(run["dir"], "eval", "eval.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            try:
                rows = json.load(f)
            except json.JSONDecodeError as e:
                print(f"learner report: {path}: {e}; skipped", file=sys.stderr)
                continue
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict):
                continue
            entry = {"run": run["name"], "model": run["model"], "rank": run["rank"],
                     "dataset": row.get("dataset"),
                     "config": "baseline" if row.get("model") == "base" else "final",
                     "problems": row.get("problems"), "samples": row.get("samples"),
                     "pass": {}}
            for key in row:
                m = re.fullmatch(r"pass@(\d+)", key)
                if m:
                    value, se = pass_at_k_with_se(row, int(m.group(1)))
                    entry["pass"][m.group(1)] = {"value": row[key], "se": se,
                                                 "recomputed": value}
            table1.append(entry)
    table2 = []
    for run in runs:
        entropies = [row["entropy"] for row in run["train"]
                     if isinstance(row.get("entropy"), (int, float))]
        window = args.window or max(1, len(entropies) // 10)
        change = relative_entropy_change(entropies, window)
        if change is None:
            continue
        ref = paper["table2"].get(paper_key(run["model"]) or "", {}).get(str(run["rank"]))
        table2.append({"run": run["name"], "model": run["model"], "rank": run["rank"],
                       "steps": len(entropies), "window": window,
                       "first": change[0], "last": change[1], "change_percent": change[2],
                       "paper_change_percent": ref})
    with open(os.path.join(out, "tables.json"), "w") as f:
        json.dump({"table1": table1, "table2": table2}, f, indent=1, allow_nan=False)

    md = [f"# microrl report: {root}", "",
          f"{len(runs)} run(s): " + ", ".join(f"{r['name']} ({r['model']}, "
                                              f"{r['label']}, {len(r['train'])} steps)"
                                              for r in runs), ""]
    md += ["## Table 1: pass@k (%)", ""]
    if table1:
        md += ["Mean over problems of the unbiased estimate (Chen et al.), ± its standard "
               "error. Baseline: the base model (`--compare_base`); final: the adapter.", "",
               "| run | model | rank | dataset | config | n | pass@k ± s.e. | paper's |",
               "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for e in table1:
            cells = " ".join(
                f"@{k} {100 * v['value']:.1f}" + (f" ± {100 * v['se']:.1f}"
                                                  if v["se"] is not None else "")
                for k, v in sorted(e["pass"].items(), key=lambda kv: int(kv[0])))
            ref = paper["table1"].get(paper_key(e["model"]) or "", {}).get(
                e["config"], {}).get(str(e["dataset"]).lower())
            # The paper's final row is its best rank and checkpoint, whatever this
            # row's rank.
            ref_text = (" ".join(f"@{k} {v}" for k, v in ref.items()) +
                        " (paper, best rank)" if ref else "")
            md.append(f"| {e['run']} | {e['model']} | {e['rank']} | {e['dataset']} | "
                      f"{e['config']} | {e['samples']} | {cells} | {ref_text} |")
    else:
        md.append("No eval/eval.json in these runs yet.")
    md += ["", "## Table 2: relative change of mean token entropy during training", "",
           "(mean of the last window − mean of the first window) / first, over the "
           "training steps' mean token entropy. The paper does not state its windows; "
           "these (a tenth of the steps, or --window) are this report's choice, stated "
           "per run. (`learner eval --compare_base` prints another measure: the eval "
           "sets' entropy of the adapter against the base model.)", "",
           "| run | model | rank | steps | window | first | last | change | paper's |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in table2:
        ref = (f"{e['paper_change_percent']:+.1f}% (paper)"
               if e["paper_change_percent"] is not None else "")
        change = (f"{e['change_percent']:+.1f}%" if e["change_percent"] is not None
                  else "n/a (first window's entropy is 0)")
        md.append(f"| {e['run']} | {e['model']} | {e['rank']} | {e['steps']} | "
                  f"{e['window']} | {e['first']:.4f} | {e['last']:.4f} | "
                  f"{change} | {ref} |")
    md += ["", "## Figures", ""]
    for stem, title in figure_files:
        md.append(f"![{title}](figures/{stem}.png)")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    # index.html: the markdown's content, tables as HTML, figures inlined.
    body = [f"<h1>microrl report</h1><p>{html.escape(root)}</p>"]
    in_table = False
    for line in md[1:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("- "):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>"
                                         for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            stem = re.search(r"figures/(.+)\.png", line).group(1)
            with open(os.path.join(figures_dir, stem + ".png"), "rb") as f:
                data = base64.b64encode(f.read()).decode()
            body.append(f'<img alt="{html.escape(stem)}" src="data:image/png;base64,{data}">')
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;font-size:13px}img{max-width:100%;display:block;margin:1em 0}")
    with open(os.path.join(out, "index.html"), "w") as f:
        f.write(f"<!doctype html><html><head><meta charset='utf-8'><title>microrl report"
                f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    print(f"report: {os.path.join(out, 'index.html')} ({len(figure_files)} figures, "
          f"{len(table1)} Table 1 rows, {len(table2)} Table 2 rows)")


if __name__ == "__main__":
    main()
