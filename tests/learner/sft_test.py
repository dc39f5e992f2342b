"""Stopping `learner sft` (learner/sft.cc) with a signal, on the demo's tiny model.

    sft_test.py --learner BIN --source_dir SRC

SIGTERM in the middle of a long warm-up: the learner finishes the step in flight, says
where it stopped, logs every step done once, saves the adapter of those steps and exits
0, within seconds. That adapter is the one a warm-up of exactly that many steps makes
(same seed): bit for bit. SIGINT (a terminal's Ctrl-C) stops it the same way.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish, require  # noqa: E402
from service_process import make_demo, required_args  # noqa: E402


def sft(args, work, name, steps):
    """A `learner sft` of the demo's warm-up, `steps` steps, run `name`; its process."""
    return subprocess.Popen(
        [args.learner, "sft", f"--config={work}/sft.yaml",
         f"--set=run.name={name};run.max_steps={steps}"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_after(proc, sig, step):
    """Sends `sig` once `proc` has printed step `step`'s progress line; its exit code,
    output and the seconds from the signal to its exit."""
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith(f"sft step {step}/"):
            break
    sent = time.time()
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=120)
    return proc.returncode, "".join(out) + rest, time.time() - sent


def read_adapter(run_dir):
    with open(os.path.join(run_dir, "adapter", "adapter_model.safetensors"), "rb") as f:
        return f.read()


def main():
    args = required_args("learner", "source_dir")
    args.learner = os.path.abspath(args.learner)
    with tempfile.TemporaryDirectory(prefix="sft_test_") as work:
        make_demo(args.source_dir, work, seed=1)
        with open(os.path.join(args.source_dir, "deploy", "demo", "sft.yaml")) as f:
            text = f.read()
        with open(os.path.join(work, "sft.yaml"), "w") as f:
            f.write(text)

        # The demo's sft.yaml: paths relative to the demo directory, runs under runs/.
        code, out, seconds = stop_after(sft(args, work, "long", 100000), signal.SIGTERM, 10)
        match = re.search(r"sft stopped by SIGTERM after step (\d+) of 100000", out)
        check(code == 0 and match is not None,
              f"SIGTERM stops a 100000-step warm-up (exit {code}), saying where" +
              ("" if match else f": {out[-800:]}"))
        require(match is not None, "the stop was reported")
        done = int(match.group(1))
        check(seconds < 30, f"it exits {seconds:.1f} s after the signal (under 30)")
        run_dir = os.path.join(work, "runs", "long")
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            steps = [json.loads(line)["step"] for line in f if line.strip()]
        check(done >= 10 and steps == list(range(1, done + 1)),
              f"every step done logged once: {done} steps, log has {steps[:3]}..{steps[-3:]}")
        check(f"sft adapter (step {done}) saved to" in out and
              os.path.exists(os.path.join(run_dir, "adapter", "adapter_config.json")),
              "the adapter of those steps was saved")

        proc = sft(args, work, "exact", done)
        exact_out, _ = proc.communicate(timeout=600)
        require(proc.returncode == 0, f"a warm-up of {done} steps runs: {exact_out[-800:]}")
        check(read_adapter(run_dir) == read_adapter(os.path.join(work, "runs", "exact")),
              f"the stopped warm-up saved the adapter a {done}-step warm-up makes, bit for bit")

        code, out, _ = stop_after(sft(args, work, "interrupted", 100000), signal.SIGINT, 10)
        stopped = code == 0 and "sft stopped by SIGINT after step" in out and \
            os.path.exists(os.path.join(work, "runs", "interrupted", "adapter",
                                        "adapter_model.safetensors"))
        check(stopped, f"SIGINT (Ctrl-C) stops it the same way (exit {code})" +
              ("" if stopped else f": {out[-800:]}"))
    finish()


if __name__ == "__main__":
    main()
