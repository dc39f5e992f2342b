"""End to end (label e2e): the shortened CPU demo really learns, its dashboard's
queries all return data from a real Prometheus, and the same demo works with the Python
example reward service in place of reward_service.

Run 1: deploy/demo/demo.py --quick --seed 0 --check_dashboard: makes the tiny model,
starts reward_service, rollout_server and Prometheus (Debian's), warms the adapter up
with `learner sft`, evaluates it, trains it with GRPO, evaluates it again, then runs
every PromQL expression of dashboards/microrl.json against that Prometheus (each must
return at least one series). Checked: exit status 0, the before/after table printed,
the mean reward of the last steps above that of the first steps by a clear margin,
held-out accuracy (sampled and greedy) improved, the adapter saved in PEFT's format.

Run 2: the same with --python_reward, starting from run 1's warm-up adapter (the
warm-up does not involve the reward service). Checked the same way.

Run 3: run 1 again with the same seed but only 5 GRPO steps: the model, tokenizer, data
and warm-up adapter must be byte-identical to run 1's, and the first 5 GRPO steps' metrics
(timings aside) equal (the demo is deterministic for a seed).

  demo_test.py --build_dir BUILD --source_dir REPO
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish  # noqa: E402
from service_process import remove_work  # noqa: E402



def run_demo(args, out, extra):
    command = [sys.executable, os.path.join(args.source_dir, "deploy", "demo", "demo.py"),
               "--quick", "--seed", "0", "--out", out, "--build_dir", args.build_dir,
               "--prometheus_port", "0", *extra]
    print("$ " + " ".join(command), flush=True)
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=1200)
    print(proc.stdout, flush=True)
    return proc


def check_run(name, proc, out):
    check(proc.returncode == 0, f"{name}: demo exits 0 (got {proc.returncode})")
    if proc.returncode != 0:
        return None
    check("before GRPO (warm-up only)" in proc.stdout and "after GRPO" in proc.stdout,
          f"{name}: prints the before/after table")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    first, last = summary["reward_first_steps"], summary["reward_last_steps"]
    check(last >= first + 0.15,
          f"{name}: reward of the last {summary['reward_window']} steps {last:.3f} exceeds "
          f"the first {summary['reward_window']} steps' {first:.3f} by >= 0.15")
    before, after = summary["before"], summary["after"]
    check(after["pass@1"] >= before["pass@1"] + 0.15,
          f"{name}: held-out sampled pass@1 {before['pass@1']:.3f} -> "
          f"{after['pass@1']:.3f} (>= +0.15)")
    check(after["greedy_pass@1"] >= before["greedy_pass@1"] + 0.15,
          f"{name}: held-out greedy pass@1 {before['greedy_pass@1']:.3f} -> "
          f"{after['greedy_pass@1']:.3f} (>= +0.15)")
    adapter = summary["adapter"]
    check(os.path.isfile(os.path.join(adapter, "adapter_config.json")) and
          os.path.isfile(os.path.join(adapter, "adapter_model.safetensors")),
          f"{name}: the adapter is saved in PEFT's format at {adapter}")
    check(adapter in proc.stdout, f"{name}: prints where the adapter was saved")
    report = os.path.join(out, "runs", "grpo", "report", "index.html")
    check(f"Report: {report}" in proc.stdout and os.path.isfile(report) and
          os.path.isfile(os.path.join(out, "runs", "grpo", "report", "figures",
                                      "reward.png")),
          f"{name}: ends with its report, at {report}")
    with open(os.path.join(out, "runs", "grpo", "metrics.jsonl")) as f:
        steps = [json.loads(line) for line in f if '"reward_mean"' in line]
    check(len(steps) == summary["grpo_steps"],
          f"{name}: one metrics line per GRPO step ({len(steps)})")
    return summary


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def step_metrics(out, steps):
    """The first `steps` GRPO metrics lines without timings and throughputs."""
    with open(os.path.join(out, "runs", "grpo", "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"reward_mean"' in line][:steps]
    return [{k: v for k, v in m.items()
             if not k.startswith("time/") and not k.endswith("per_second")}
            for m in lines]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    parser.add_argument("--source_dir", required=True)
    parser.add_argument("--keep", action="store_true", help="keep the demo directories")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="microrl_demo_test_")
    try:
        out1 = os.path.join(work, "cpp_reward")
        proc = run_demo(args, out1, ["--check_dashboard"])
        summary = check_run("reward_service", proc, out1)
        if summary is not None:
            check(summary.get("dashboard_checked") is True and
                  "expressions of microrl.json returned series" in proc.stdout,
                  "every PromQL expression of dashboards/microrl.json returned series")
            out2 = os.path.join(work, "python_reward")
            proc = run_demo(args, out2, ["--python_reward", "--sft_adapter",
                                         os.path.join(out1, "runs", "sft", "adapter")])
            summary2 = check_run("python reward service", proc, out2)
            if summary2 is not None:
                check(summary2["reward_service"] == "python",
                      "run 2 used the Python example reward service")
            out3 = os.path.join(work, "repeat")
            proc = run_demo(args, out3, ["--grpo_steps", "5", "--eval_problems", "20"])
            check(proc.returncode == 0, f"run 3 exits 0 (got {proc.returncode})")
            if proc.returncode == 0:
                for rel in ("model/model.safetensors", "model/tokenizer.json",
                            "data/train.jsonl", "data/sft.jsonl", "data/test.jsonl",
                            "runs/sft/adapter/adapter_model.safetensors"):
                    check(digest(os.path.join(out1, rel)) == digest(os.path.join(out3, rel)),
                          f"same seed, same {rel}")
                first, again = step_metrics(out1, 5), step_metrics(out3, 5)
                check(len(first) == 5 and first == again,
                      "same seed, the same first 5 GRPO steps (rewards, losses, "
                      "gradient norms, problems)")
    finally:
        remove_work(work, args.keep)
    finish()


if __name__ == "__main__":
    main()
