"""Fault injection (label fault): real rollout_server, reward_service and learner processes
on loopback, with the demo's tiny model (deploy/demo/make_demo.py); services are killed
and restarted while the learner trains.

1. rollout server SIGKILLed while a Generate is running (its /metrics shows running
   sequences), restarted 1.5 s later on the same ports with no adapter: the learner
   retries with backoff, publishes its current adapter again, repeats the step's
   request and finishes; metrics.jsonl has each step exactly once; the restarted server
   serves the learner's last adapter version.
2. reward service SIGKILLed after step 2 and restarted 3 s later: the learner logs the
   retries, waits and finishes; each step once.
3. reward service killed for good with reward.max_wait_s=3: the learner gives up with a
   message naming the reward service, exits non-zero and leaves a checkpoint of its last
   completed step; `--resume` (reward service back) finishes the run with each step once.
4. learner SIGKILLed in the middle of step 4 (checkpoint every 2 steps), a torn line
   appended to metrics.jsonl and a half-written checkpoint directory left behind (what a
   kill during a save leaves): `--resume` continues from step 2's checkpoint, ignores
   the partial one, and its metric series (rewards, losses, gradient norms, problems:
   timings aside) equals an uninterrupted run's, step for step.
5. the newest checkpoint of a finished run torn as a power cut leaves it (a file
   truncated, another empty): `--resume` skips it with a warning, continues from the
   newest checkpoint that verifies, and logs each step once; with every checkpoint torn,
   `--resume` fails (DATA_LOSS, naming why each was skipped) instead of starting over.
6. `--resume` with another seed or LoRA rank is refused naming the key and changes
   nothing; with another learning rate it runs and logs the change; a second learner
   started on a run that one is training is refused (the run directory's lock).

  fault_test.py --rollout_server BIN --reward_service BIN --learner BIN --source_dir REPO
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish  # noqa: E402



def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A server binary on fixed ports, so that a restart is reachable at the same
    address."""

    def __init__(self, argv, name, work):
        self.argv, self.name, self.work = argv, name, work
        self.port, self.metrics_port = free_port(), free_port()
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        ready = os.path.join(self.work, f"{self.name}.ready")
        if os.path.exists(ready):
            os.remove(ready)
        log = open(os.path.join(self.work, f"{self.name}.{self.starts}.log"), "w")
        self.proc = subprocess.Popen(self.argv + [f"--port={self.port}",
                                                  f"--metrics_port={self.metrics_port}",
                                                  f"--ready_file={ready}"],
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit(f"{self.name} did not start: {open(log.name).read()}")
            time.sleep(0.02)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metric(self, name):
        try:
            text = urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
        return None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"


def config(work, name, rollout, reward, steps, extra=""):
    path = os.path.join(work, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"""run:
  name: {name}
  output_dir: {work}/runs
  seed: 3
  max_steps: {steps}
  checkpoint_every: 2
model:
  path: {work}/demo/model
  gradient_checkpointing: false
lora:
  rank: 8
  alpha: 16
data:
  train: {work}/demo/data/train.jsonl
  instruction: "{{problem}}"
rollout:
  address: {rollout.address}
  prompts_per_step: 4
  group_size: 4
  max_response_tokens: 48
  max_wait_s: 60
reward:
  address: {reward.address}
  max_wait_s: 60
optim:
  lr: 1.0e-3
{extra}""")
    return path


class Learner:
    def __init__(self, binary, work, config_path, extra=()):
        self.log_path = os.path.join(work, os.path.basename(config_path) + ".log")
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([binary, "--port=0", "--metrics_port=0",
                                      f"--config={config_path}", *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout=300):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def output(self):
        self.log.flush()
        return open(self.log_path).read()


def steps_logged(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    steps = []
    with open(path) as f:
        for line in f:
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "reward_mean" in m:
                steps.append(m["step"])
    return steps


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    check(False, f"timed out waiting for {what}")
    return False


def series(run_dir):
    """Step metrics without timings, throughputs and adapter versions (which count
    publishes, and a resumed run publishes once more)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"reward_mean"' in line]
    return [{k: v for k, v in m.items()
             if not k.startswith("time/") and not k.endswith("per_second")
             and k != "adapter_version"} for m in lines]


def main():
    parser = argparse.ArgumentParser()
    for flag in ("rollout_server", "reward_service", "learner", "source_dir"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="microrl_fault_")
    subprocess.run([sys.executable, os.path.join(args.source_dir, "deploy", "demo",
                                                 "make_demo.py"),
                    "--out", os.path.join(work, "demo"), "--seed", "1"], check=True,
                   env=dict(os.environ, TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1"),
                   stdout=subprocess.DEVNULL)
    rollout = Service([args.rollout_server, f"--model={work}/demo/model",
                       "--max_model_len=128", "--kv_cache_mb=32"], "rollout_server", work)
    reward = Service([args.reward_service], "reward_service", work)
    runs = os.path.join(work, "runs")
    try:
        rollout.start()
        reward.start()

        # ---- 1. the rollout server dies during a Generate
        learner = Learner(args.learner, work, config(work, "rollout_kill", rollout, reward, 6))
        run = os.path.join(runs, "rollout_kill")
        if wait_for(lambda: len(steps_logged(run)) >= 2, 120, "step 2") and \
                wait_for(lambda: (rollout.metric("microrl_rollout_running_sequences") or 0)
                         > 0, 60, "a Generate in flight"):
            rollout.kill()
            killed_at = len(steps_logged(run))
            time.sleep(1.5)
            rollout.start()
            code = learner.wait()
            out = learner.output()
            check(code == 0, f"rollout killed in Generate after step {killed_at}: the "
                             f"learner finishes (exit {code})")
            check("unavailable" in out and "retrying in" in out,
                  "the learner logged its retries of the rollout server")
            check("publishing the current adapter again" in out,
                  "the learner published its adapter again to the restarted server")
            check(steps_logged(run) == [1, 2, 3, 4, 5, 6],
                  f"each step logged exactly once: {steps_logged(run)}")
            served = rollout.metric("microrl_rollout_adapter_version")
            last = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))
                    if '"reward_mean"' in line][-1]["adapter_version"]
            check(served == last, f"the restarted server serves the learner's last "
                                  f"adapter version ({served} vs {last})")
        else:
            learner.proc.kill()

        # ---- 2. the reward service is down for 3 s
        learner = Learner(args.learner, work, config(work, "reward_blip", rollout, reward, 6))
        run = os.path.join(runs, "reward_blip")
        if wait_for(lambda: len(steps_logged(run)) >= 2, 120, "step 2"):
            reward.kill()
            time.sleep(3)
            reward.start()
            code = learner.wait()
            out = learner.output()
            check(code == 0, f"reward service down 3 s: the learner finishes (exit {code})")
            check("reward" in out and "unavailable" in out and "retrying in" in out,
                  "the learner logged its waits for the reward service")
            check(steps_logged(run) == [1, 2, 3, 4, 5, 6],
                  f"each step logged exactly once: {steps_logged(run)}")
        else:
            learner.proc.kill()

        # ---- 3. the reward service stays down past reward.max_wait_s
        path = config(work, "reward_gone", rollout, reward, 6)
        learner = Learner(args.learner, work, path, ["--set=reward.max_wait_s=3"])
        run = os.path.join(runs, "reward_gone")
        if wait_for(lambda: len(steps_logged(run)) >= 3, 120, "step 3"):
            reward.kill()
            code = learner.wait()
            out = learner.output()
            done = steps_logged(run)
            check(code not in (0, None), f"reward service gone: the learner exits non-zero "
                                         f"({code})")
            check("training failed" in out and "unavailable after" in out and
                  "Score" in out, "with a message naming the unreachable reward call")
            ckpts = sorted(os.listdir(os.path.join(run, "checkpoints")))
            check(ckpts and ckpts[-1] == f"step_{done[-1]:08d}" if done else False,
                  f"a checkpoint of the last completed step {done[-1:]}: {ckpts}")
            reward.start()
            learner = Learner(args.learner, work, path, ["--resume"])
            code = learner.wait()
            check(code == 0, f"--resume with the reward service back finishes (exit {code})")
            check(steps_logged(run) == [1, 2, 3, 4, 5, 6],
                  f"each step logged exactly once: {steps_logged(run)}")
        else:
            learner.proc.kill()

        # ---- 4. the learner dies mid-step; a checkpoint save was interrupted
        whole = Learner(args.learner, work, config(work, "whole", rollout, reward, 6))
        check(whole.wait() == 0, "the uninterrupted reference run finishes")
        path = config(work, "killed", rollout, reward, 6)
        learner = Learner(args.learner, work, path)
        run = os.path.join(runs, "killed")
        if wait_for(lambda: len(steps_logged(run)) >= 3, 120, "step 3") and \
                wait_for(lambda: (rollout.metric("microrl_rollout_running_sequences") or 0)
                         > 0, 60, "step 4's Generate"):
            learner.proc.send_signal(signal.SIGKILL)
            learner.proc.wait()
            with open(os.path.join(run, "metrics.jsonl"), "a") as f:
                f.write('{"step": 4, "reward_mean": 0.')  # torn by the kill
            partial = os.path.join(run, "checkpoints", "step_00000004.tmp")
            os.makedirs(os.path.join(partial, "adapter"), exist_ok=True)
            with open(os.path.join(partial, "adapter", "adapter_model.safetensors"),
                      "wb") as f:
                f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")  # cut short
            learner = Learner(args.learner, work, path, ["--resume"])
            code = learner.wait()
            out = learner.output()
            check(code == 0, f"--resume after SIGKILL finishes (exit {code})")
            check("step_00000002" in out,
                  "it resumed from step 2's checkpoint, the last complete one")
            check(steps_logged(run) == [1, 2, 3, 4, 5, 6],
                  f"each step logged exactly once: {steps_logged(run)}")
            check(series(run) == series(os.path.join(runs, "whole")),
                  "the resumed run's metric series equals the uninterrupted run's")
        else:
            learner.proc.kill()

        # ---- 5. a power cut tore the newest checkpoint's files (renamed into place,
        # never written to disk): resume skips it for the newest one that verifies
        torn = os.path.join(runs, "torn")
        shutil.copytree(os.path.join(runs, "whole"), torn)
        newest = os.path.join(torn, "checkpoints", "step_00000006")
        check(os.path.isfile(os.path.join(newest, "MANIFEST.json")),
              "a checkpoint has a MANIFEST.json")
        optimizer = os.path.join(newest, "optimizer.safetensors")
        os.truncate(optimizer, os.path.getsize(optimizer) // 2)
        open(os.path.join(newest, "state.json"), "w").close()  # an empty file
        learner = Learner(args.learner, work, config(work, "torn", rollout, reward, 8),
                          ["--resume"])
        code = learner.wait()
        out = learner.output()
        check(code == 0, f"--resume over a torn checkpoint finishes (exit {code})")
        check("skipping checkpoint" in out and "step_00000006" in out,
              "the torn checkpoint is skipped with a warning naming it")
        check("step_00000004 (step 4)" in out,
              "it resumed from step 4's checkpoint, the newest that verifies")
        check(steps_logged(torn) == [1, 2, 3, 4, 5, 6, 7, 8],
              f"each step logged exactly once: {steps_logged(torn)}")
        # Every checkpoint torn: --resume refuses instead of starting over.
        for name in os.listdir(os.path.join(torn, "checkpoints")):
            open(os.path.join(torn, "checkpoints", name, "state.json"), "w").close()
        learner = Learner(args.learner, work, config(work, "torn", rollout, reward, 10),
                          ["--resume"])
        code = learner.wait()
        out = learner.output()
        last = out[out.rfind("skipping checkpoint"):]
        check(code != 0 and "no checkpoint under" in last and "verifies" in last,
              f"--resume with no valid checkpoint fails, saying so (exit {code}): "
              f"{last[-300:]!r}")
        check(steps_logged(torn)[-1] == 8, "and leaves the run's log as it was")

        # ---- 6. --resume with a changed configuration; two learners on one run
        whole_path = config(work, "whole", rollout, reward, 8)
        learner = Learner(args.learner, work, whole_path, ["--resume", "--set=run.seed=4"])
        code = learner.wait()
        out = learner.output()
        check(code != 0 and "run.seed" in out and "differ" in out,
              f"--resume with another seed is refused, naming it (exit {code})")
        learner = Learner(args.learner, work, whole_path, ["--resume", "--set=lora.rank=4"])
        code = learner.wait()
        check(code != 0 and "lora.rank" in learner.output()[-2000:],
              f"--resume with another LoRA rank is refused (exit {code})")
        check(steps_logged(os.path.join(runs, "whole")) == [1, 2, 3, 4, 5, 6],
              "refused resumes leave the run as it was")
        long_path = config(work, "whole", rollout, reward, 1000)
        first = Learner(args.learner, work, long_path, ["--resume", "--set=optim.lr=2.0e-3"])
        whole_run = os.path.join(runs, "whole")
        if wait_for(lambda: len(steps_logged(whole_run)) >= 7, 120, "step 7"):
            again = os.path.join(work, "whole_again.yaml")
            shutil.copyfile(long_path, again)
            second = Learner(args.learner, work, again, ["--resume"])
            code = second.wait(timeout=60)
            check(code not in (0, None) and "another learner" in second.output(),
                  f"a second learner on the same run is refused (exit {code})")
        first.proc.send_signal(signal.SIGTERM)
        code = first.wait()
        out = first.output()
        check(code == 0, f"--resume with another learning rate runs, then stops (exit {code})")
        check("configuration changed" in out and "lr" in out[out.find("configuration changed"):],
              "and logs what changed")
        logged = steps_logged(whole_run)
        check(logged == list(range(1, len(logged) + 1)) and len(logged) >= 7,
              f"each step logged exactly once: {logged}")
    finally:
        rollout.stop()
        reward.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
