"""Soak: the demo's GRPO run with AddressSanitizer/UBSan builds of the three services, for
a fixed time, with services SIGKILLed and restarted at random moments.

  tests/soak/run_asan_soak.sh [MINUTES]      (builds build-asan/, then runs this)
  soak.py --build_dir build-asan --source_dir REPO [--minutes 10] [--seed 0]
          [--warmup_learner build/learner/learner]

The demo's model and data are made (deploy/demo/make_demo.py) and warmed up with
`learner sft` (by --warmup_learner: the warm-up is not what is soaked). Then
reward_service, rollout_server and the learner (GRPO, a checkpoint every 5 steps, peers
waited for up to 2 minutes) run from build_dir; every 15-45 s one of them, chosen at
random, is SIGKILLed and restarted 1-3 s later (the learner with --resume). At the end
the learner and the services get SIGTERM, and exit normally so LeakSanitizer runs.
Checked: no sanitizer report in any log (AddressSanitizer, LeakSanitizer, UBSan
"runtime error"), every process stopped at the end exited 0, every exit the soak did
not cause is recorded (polled each second) and none was non-zero, a signal or an abort
(only the learner may end by itself, with 0, when its run is done), the steps in metrics.jsonl
are 1..N once each, and the mean reward of the last 20 steps (10 in a short run)
exceeds that of the first ones. Exit status 0 when all hold.
"""
import argparse
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish  # noqa: E402
from service_process import make_demo  # noqa: E402

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, name, argv, work, env, cwd=None):
        self.name, self.argv, self.work, self.env, self.cwd = name, argv, work, env, cwd
        self.proc = None
        self.starts = 0
        self.exit_codes = []

    def start(self, extra=()):
        self.starts += 1
        self.started_at = time.time()
        log = open(os.path.join(self.work, f"{self.name}.{self.starts}.log"), "w")
        self.proc = subprocess.Popen(self.argv + list(extra), stdout=log,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.exit_codes.append("SIGKILL (the soak's)")
        else:
            self.exit_codes.append(self.proc.returncode)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_codes.append(self.proc.wait(timeout=120))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.exit_codes.append(self.proc.wait())
        else:
            self.exit_codes.append(self.proc.returncode)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    parser.add_argument("--source_dir", required=True)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup_learner", default="")
    parser.add_argument("--warmup_steps", type=int, default=1500)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    build = os.path.abspath(args.build_dir)
    binary = {n: os.path.join(build, n, n) for n in ("rollout_server", "reward_service",
                                                     "learner")}
    work = tempfile.mkdtemp(prefix="microrl_soak_")
    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               ASAN_OPTIONS="detect_leaks=1:detect_container_overflow=0:"
                            "allocator_may_return_null=1",
               UBSAN_OPTIONS="print_stacktrace=1",
               LSAN_OPTIONS="suppressions=" + os.path.join(
                   os.path.dirname(os.path.abspath(__file__)), "lsan.supp"))
    demo = os.path.join(work, "demo")
    make_demo(args.source_dir, demo, args.seed, env=env)
    for name in ("sft.yaml", "grpo.yaml"):
        shutil.copy(os.path.join(args.source_dir, "deploy", "demo", name), demo)
    warmup = os.path.abspath(args.warmup_learner) if args.warmup_learner else binary["learner"]
    t = time.time()
    subprocess.run([warmup, "sft", "--config=sft.yaml",
                    f"--set=run.seed={args.seed};run.max_steps={args.warmup_steps}"],
                   cwd=demo, check=True, env=env, stdout=subprocess.DEVNULL)
    print(f"[soak] warm-up done in {time.time() - t:.0f} s", flush=True)

    ports = {n: (free_port(), free_port()) for n in binary}
    services = {
        "reward_service": Proc("reward_service", [binary["reward_service"],
                                                  f"--port={ports['reward_service'][0]}",
                                                  f"--metrics_port={ports['reward_service'][1]}"],
                               work, env),
        "rollout_server": Proc("rollout_server", [binary["rollout_server"],
                                                  f"--port={ports['rollout_server'][0]}",
                                                  f"--metrics_port={ports['rollout_server'][1]}",
                                                  f"--model={demo}/model",
                                                  "--max_model_len=128", "--kv_cache_mb=32"],
                               work, env),
    }
    overrides = (f"run.seed={args.seed};run.max_steps=100000;run.checkpoint_every=5;"
                 f"run.keep_checkpoints=2;eval.every=0;"
                 f"rollout.address=127.0.0.1:{ports['rollout_server'][0]};"
                 f"reward.address=127.0.0.1:{ports['reward_service'][0]};"
                 f"rollout.max_wait_s=120;reward.max_wait_s=120")
    learner = Proc("learner", [binary["learner"], "--config=grpo.yaml",
                               f"--port={ports['learner'][0]}",
                               f"--metrics_port={ports['learner'][1]}",
                               f"--set={overrides}"], work, env, cwd=demo)
    everyone = dict(services, learner=learner)
    kills = {n: 0 for n in everyone}
    self_exits = []  # (name, code) of every exit the soak did not cause

    def restart_exited():
        for name, p in everyone.items():
            if p.proc.poll() is not None:
                code = p.proc.returncode
                p.exit_codes.append(code)
                self_exits.append((name, code))
                print(f"[soak] {name} exited by itself with {code}", flush=True)
                p.start(["--resume"] if name == "learner" else [])
    try:
        for p in services.values():
            p.start()
        time.sleep(3)
        learner.start()
        end = time.time() + args.minutes * 60
        while True:
            wait = rng.uniform(15, 45)
            until = min(end, time.time() + wait)
            while time.time() < until:  # every exit is seen (and recorded) at once
                time.sleep(min(1.0, max(0.0, until - time.time())))
                restart_exited()
            if time.time() >= end:
                break
            victim = rng.choice(sorted(everyone))
            everyone[victim].kill()
            kills[victim] += 1
            time.sleep(rng.uniform(1, 3))
            everyone[victim].start(["--resume"] if victim == "learner" else [])
            print(f"[soak] {time.strftime('%H:%M:%S')} killed and restarted {victim}",
                  flush=True)
            restart_exited()
        # A SIGTERM that lands before a just-restarted process reaches main() kills
        # it by default action; let the last restart settle first.
        settle = max(p.started_at for p in everyone.values()) + 30 - time.time()
        if settle > 0:
            time.sleep(settle)
        learner.stop()
        for p in services.values():
            p.stop()
    finally:
        for p in everyone.values():
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()

    reports = []
    for log in sorted(glob.glob(os.path.join(work, "*.log"))):
        text = open(log, errors="replace").read()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                at = text.index(marker)
                reports.append(f"{os.path.basename(log)}: {text[max(0, at - 200):at + 1500]}")
    check(not reports, "no sanitizer report in any log" +
          ("" if not reports else ":\n" + "\n---\n".join(reports[:3])))
    for name, p in everyone.items():
        check(p.exit_codes[-1:] == [0], f"{name} exited 0 at the end ({p.exit_codes}); "
                                        f"killed {kills[name]} times, started {p.starts}")
    # Only the learner may end by itself, and only cleanly (its run finished).
    bad = [(name, code) for name, code in self_exits if code != 0 or name != "learner"]
    check(not bad, f"no process exited by itself with an error, a signal or an abort "
                   f"(exits the soak did not cause: {self_exits})")
    metrics = os.path.join(demo, "runs", "grpo", "metrics.jsonl")
    steps = [json.loads(line) for line in open(metrics) if '"reward_mean"' in line]
    numbers = [m["step"] for m in steps]
    check(numbers == list(range(1, len(numbers) + 1)),
          f"steps 1..{len(numbers)} logged once each")
    window = min(20, len(steps) // 2)
    if window >= 10:
        first = sum(m["reward_mean"] for m in steps[:window]) / window
        last = sum(m["reward_mean"] for m in steps[-window:]) / window
        check(last > first, f"reward still rises: first {window} steps {first:.3f}, "
                            f"last {window} {last:.3f}")
    else:
        check(False, f"only {len(steps)} steps in {args.minutes} minutes (need 20)")
    print(f"[soak] {len(steps)} steps; kills {kills}; logs in {work}")
    from checks import FAILURES  # noqa: E402
    if not args.keep and not FAILURES:
        shutil.rmtree(work, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
