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
7. graceful restarts: the rollout server answers one Generate CANCELLED (a failpoint:
   what a shutdown gives calls still running after its grace period), then is SIGTERMed
   during a Generate, and the reward service SIGTERMed later, each started again: the
   learner retries and finishes, each step once.
7b. the rollout server restarted mid-run with another adapter at version 1000: the
   learner refuses and counts those completions, publishes above that version and
   repeats the request; its series equals the uninterrupted run's.
8. colocated mode: the learner SIGTERMed during an update (the rollout server asleep)
   stops cleanly with its last logged step checkpointed and the server awake; resumed,
   series and final adapter equal an uninterrupted colocated run's. A rollout server
   whose Sleep keeps failing (failpoint) past rollout.max_wait_s ends the run with the
   last completed step saved.
9. failpoints in the learner: out of memory before step 3's first optimizer step, and
   step 3's publish failing after it committed: each run ends with the error, every
   completed step logged and the last one checkpointed; resumed, series and final
   adapter equal the uninterrupted run's.
10. power cuts: the learner SIGKILLs itself after a random write of a checkpoint
   (failpoint), then what a disk ignoring fsync could lose is torn (see tear());
   --resume, again and again: in the end each step is logged once and the series and
   final adapter equal the uninterrupted run's.
11. disk full (a small tmpfs, or a file size limit where mounting is not allowed): the
   run ends saying so, with no torn log line and no checkpoint ahead of the log; with
   room again --resume finishes with each step once and the uninterrupted run's result.

  fault_test.py --rollout_server BIN --reward_service BIN --learner BIN --source_dir REPO
"""
import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish  # noqa: E402
from service_process import free_port, make_demo, remove_work  # noqa: E402



class Service:
    """A server binary on fixed ports, so that a restart is reachable at the same
    address."""

    def __init__(self, argv, name, work):
        self.argv, self.name, self.work = argv, name, work
        self.env = dict(os.environ)
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
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 60
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit(f"{self.name} did not start: {open(log.name).read()}")
            time.sleep(0.02)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self):
        """A graceful stop (SIGTERM, as `docker compose restart` sends); its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

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
    def __init__(self, binary, work, config_path, extra=(), failpoints=None, preexec=None):
        self.log_path = os.path.join(work, os.path.basename(config_path) + ".log")
        self.log = open(self.log_path, "a")
        self.log.write(f"==== {' '.join(extra)} failpoints={failpoints}\n")
        self.log.flush()
        env = dict(os.environ)
        if failpoints:
            env["MICRORL_FAILPOINTS"] = failpoints
        self.proc = subprocess.Popen([binary, "--port=0", "--metrics_port=0",
                                      f"--config={config_path}", *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=preexec)

    def wait(self, timeout=300):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def output(self):
        """What this run printed (the log file holds every run of its config)."""
        self.log.flush()
        text = open(self.log_path).read()
        return text[text.rfind("==== "):]


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


def check_steps_once(run, steps):
    """Steps 1..steps each have exactly one line in the run's metrics.jsonl."""
    logged = steps_logged(run)
    check(logged == list(range(1, steps + 1)), f"each step logged exactly once: {logged}")


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    check(False, f"timed out waiting for {what}")
    return False


def series(run_dir):
    """Step metrics without timings, throughputs, memory, adapter versions (which
    count publishes, and a resumed run publishes once more) and publish errors."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"reward_mean"' in line]
    return [{k: v for k, v in m.items()
             if not k.startswith("time/") and not k.endswith("per_second")
             and not k.startswith("gpu_memory")
             and k not in ("adapter_version", "publish_error", "off_policy_refused")}
            for m in lines]


def same_adapter(run_a, run_b):
    """The final adapters' weights are bit for bit equal."""
    def weights(run):
        with open(os.path.join(run, "adapter", "adapter_model.safetensors"), "rb") as f:
            return f.read()
    return weights(run_a) == weights(run_b)


def checkpoint_steps(run_dir):
    root = os.path.join(run_dir, "checkpoints")
    return sorted(int(n[5:13]) for n in os.listdir(root)
                  if n.startswith("step_") and not n.endswith(".tmp")) if \
        os.path.isdir(root) else []


def tear(run_dir, rng):
    """What a power cut could lose if the disk ignored fsync: the files of the
    checkpoint being written (renamed into place or not) cut to random prefixes,
    and log lines past the newest checkpoint's step (the learner fsyncs the log
    before each checkpoint) cut at a random byte. A renamed checkpoint is torn only
    when an older complete one exists: with none at all, --resume refuses to start
    over (scenario 5), which is a different guarantee."""
    root = os.path.join(run_dir, "checkpoints")
    dirs = [n for n in os.listdir(root) if n.startswith("step_")] if os.path.isdir(root) else []
    synced_step = max((int(n[5:13]) for n in dirs), default=0)
    complete = sorted(n for n in dirs if not n.endswith(".tmp"))
    newest = max(dirs, key=lambda n: (int(n[5:13]), n.endswith(".tmp")), default=None)
    if newest is not None and (newest.endswith(".tmp") or len(complete) >= 2):
        for d, _, files in os.walk(os.path.join(root, newest)):
            for name in files:
                if rng.random() < 0.5:
                    f = os.path.join(d, name)
                    os.truncate(f, rng.randint(0, os.path.getsize(f)))
    log = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(log):
        data = open(log, "rb").read()
        keep = offset = 0
        for line in data.splitlines(keepends=True):
            offset += len(line)
            try:
                step = json.loads(line).get("step", 0)
            except json.JSONDecodeError:
                break
            if step > synced_step:
                break
            keep = offset
        os.truncate(log, rng.randint(keep, len(data)))


def main():
    parser = argparse.ArgumentParser()
    for flag in ("rollout_server", "reward_service", "learner", "source_dir"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="microrl_fault_")
    make_demo(args.source_dir, os.path.join(work, "demo"), seed=1)
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
            check_steps_once(run, 6)
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
            check_steps_once(run, 6)
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
            check_steps_once(run, 6)
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
            check_steps_once(run, 6)
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
        check_steps_once(torn, 8)
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

        reference = series(os.path.join(runs, "whole"))
        reference_run = os.path.join(work, "reference_whole")
        shutil.copytree(os.path.join(runs, "whole"), reference_run)

        # ---- 7. graceful restarts: each peer SIGTERMed (as `docker compose restart`
        # does) and started again while the learner trains. A shutdown cancels the
        # calls still running when its grace period ends; the tiny model's calls end
        # sooner, so the rollout server first answers one Generate CANCELLED by a
        # failpoint, as such a shutdown would.
        rollout.stop()
        rollout.env = dict(os.environ, MICRORL_FAILPOINTS="rollout.generate=error@3")
        rollout.start()
        learner = Learner(args.learner, work, config(work, "graceful", rollout, reward, 8))
        run = os.path.join(runs, "graceful")
        if wait_for(lambda: len(steps_logged(run)) >= 2, 120, "step 2") and \
                wait_for(lambda: (rollout.metric("microrl_rollout_running_sequences") or 0)
                         > 0, 60, "a Generate in flight"):
            check(rollout.terminate() == 0, "the rollout server stops on SIGTERM (exit 0)")
            time.sleep(1.0)
            rollout.env = dict(os.environ)
            rollout.start()
            if wait_for(lambda: len(steps_logged(run)) >= 5, 120, "step 5"):
                check(reward.terminate() == 0, "the reward service stops on SIGTERM (exit 0)")
                time.sleep(1.0)
                reward.start()
            code = learner.wait()
            out = learner.output()
            check(code == 0, f"peers restarted gracefully: the learner finishes (exit {code}): "
                             f"{out[-600:]!r}")
            check("cancelled by the peer" in out and "retrying in" in out,
                  "a Generate the rollout server cancelled was retried")
            check_steps_once(run, 8)
        else:
            learner.proc.kill()

        # ---- 7b. another policy's samples: the rollout server restarted mid-run with
        # another adapter at a higher version (as a second learner or a `learner eval
        # --adapter` would leave it). The learner refuses those completions, counts
        # them, publishes its own adapter above that version and repeats the request.
        learner = Learner(args.learner, work, config(work, "off_policy", rollout, reward, 6))
        run = os.path.join(runs, "off_policy")
        if wait_for(lambda: len(steps_logged(run)) >= 3, 120, "step 3"):
            rollout.kill()
            argv = rollout.argv
            rollout.argv = argv + [f"--adapter={reference_run}/adapter",
                                   "--adapter_version=1000"]
            rollout.start()
            rollout.argv = argv
            code = learner.wait()
            out = learner.output()
            with open(os.path.join(run, "metrics.jsonl")) as f:
                refused = sum(json.loads(line).get("off_policy_refused", 0) for line in f)
            check(code == 0, f"another policy's adapter on the rollout server: the learner "
                             f"finishes (exit {code})")
            check(refused > 0 and "completions came from adapter version 1000" in out,
                  f"its completions were refused and counted ({refused})")
            check_steps_once(run, 6)
            check(series(run) == reference,
                  "only the learner's own samples were trained on: the series equals the "
                  "uninterrupted run's")
            check((rollout.metric("microrl_rollout_adapter_version") or 0) > 1000,
                  "the learner's adapter is served above the other one's version")
        else:
            learner.proc.kill()

        # ---- 8. colocated mode (the presets'): the learner SIGTERMed during an update,
        # and a rollout server that cannot sleep
        colocated = "  colocated: true\n"

        def colo_config(name, steps, extra=""):
            path = config(work, name, rollout, reward, steps)
            text = open(path).read().replace("  max_wait_s: 60\nreward:",
                                             f"  max_wait_s: 60\n{colocated}reward:", 1)
            with open(path, "w") as f:
                f.write(text + extra)
            return path

        colo_whole = Learner(args.learner, work, colo_config("colo_whole", 6))
        check(colo_whole.wait() == 0, "the uninterrupted colocated run finishes")
        colo_reference = series(os.path.join(runs, "colo_whole"))
        check(rollout.metric("microrl_rollout_sleeping") == 0,
              "and leaves the rollout server awake")
        path = colo_config("colo_term", 6)
        learner = Learner(args.learner, work, path)
        run = os.path.join(runs, "colo_term")
        if wait_for(lambda: len(steps_logged(run)) >= 2, 120, "step 2") and \
                wait_for(lambda: rollout.metric("microrl_rollout_sleeping") == 1, 60,
                         "an update (the rollout server asleep)"):
            learner.proc.send_signal(signal.SIGTERM)
            stopped_at = time.time()
            code = learner.wait(timeout=120)
            took = time.time() - stopped_at
            out = learner.output()
            done = steps_logged(run)
            check(code == 0, f"SIGTERM during an update: the learner stops cleanly (exit {code},"
                             f" {took:.1f} s): {out[-600:]!r}")
            check(done and checkpoint_steps(run)[-1:] == done[-1:],
                  f"with a checkpoint of its last logged step ({checkpoint_steps(run)} vs "
                  f"{done[-1:]})")
            check(rollout.metric("microrl_rollout_sleeping") == 0,
                  "and the rollout server awake again")
            learner = Learner(args.learner, work, path, ["--resume"])
            code = learner.wait()
            check(code == 0, f"--resume after the SIGTERM finishes (exit {code})")
            check_steps_once(run, 6)
            check(series(run) == colo_reference,
                  "the resumed colocated run's series equals the uninterrupted one's")
            check(same_adapter(run, os.path.join(runs, "colo_whole")),
                  "and its final adapter equals the uninterrupted run's, bit for bit")
        else:
            learner.proc.kill()

        # A rollout server whose Sleep fails from step 3 on (a failpoint), for longer
        # than rollout.max_wait_s: the run ends with the last completed step saved.
        rollout.stop()
        rollout.env = dict(os.environ, MICRORL_FAILPOINTS="rollout.sleep=error@3+")
        rollout.start()
        path = colo_config("colo_nosleep", 6)
        set_flags = ["--set=rollout.max_wait_s=3", "--set=run.checkpoint_every=100"]
        learner = Learner(args.learner, work, path, set_flags)
        run = os.path.join(runs, "colo_nosleep")
        code = learner.wait()
        out = learner.output()
        check(code not in (0, None) and "Sleep" in out and "unavailable after" in out,
              f"a rollout server that cannot sleep ends the run, naming Sleep (exit {code})")
        check(steps_logged(run) == [1, 2] and checkpoint_steps(run) == [2],
              f"steps 1 and 2 logged and step 2 checkpointed: {steps_logged(run)}, "
              f"{checkpoint_steps(run)}")
        rollout.stop()
        rollout.env = dict(os.environ)
        rollout.start()
        learner = Learner(args.learner, work, path, ["--resume"] + set_flags)
        code = learner.wait()
        check(code == 0, f"--resume with the rollout server sleeping again finishes "
                         f"(exit {code})")
        check_steps_once(run, 6)
        check(series(run) == colo_reference,
              "and the series equals the uninterrupted colocated run's")

        # ---- 9. faults in the learner's update and publish (failpoints)
        for name, failpoint, logged, what in (
                ("oom", "learner.update=error@3", [1, 2],
                 "out of memory before step 3's first optimizer step"),
                ("publish_fail", "learner.publish=error@4", [1, 2, 3],
                 "step 3's publish failing after the step committed")):
            path = config(work, name, rollout, reward, 6)
            set_flags = ["--set=run.checkpoint_every=100"]
            learner = Learner(args.learner, work, path, set_flags, failpoints=failpoint)
            run = os.path.join(runs, name)
            code = learner.wait()
            out = learner.output()
            check(code not in (0, None) and "injected failure" in out,
                  f"{what}: the run ends with the error (exit {code})")
            check(steps_logged(run) == logged and checkpoint_steps(run) == logged[-1:],
                  f"{what}: steps {logged} logged, the last checkpointed: "
                  f"{steps_logged(run)}, {checkpoint_steps(run)}")
            learner = Learner(args.learner, work, path, ["--resume"] + set_flags)
            code = learner.wait()
            check(code == 0 and steps_logged(run) == [1, 2, 3, 4, 5, 6],
                  f"{what}: --resume finishes, each step logged once "
                  f"(exit {code}, {steps_logged(run)})")
            check(series(run) == reference and same_adapter(run, reference_run),
                  f"{what}: the series and the final adapter equal the uninterrupted run's")

        # ---- 10. power cuts during checkpoint writes: the learner SIGKILLs itself
        # after a random one of a checkpoint's writes (a failpoint), and what it wrote
        # since its last fsync is truncated to a random prefix, as the page cache
        # would lose it; then --resume, until the run is done.
        rng = random.Random(int(os.environ.get("FAULT_SEED", "17")))
        path = config(work, "power", rollout, reward, 6)
        run = os.path.join(runs, "power")
        set_flags = ["--set=run.checkpoint_every=1"]
        cuts = 0
        for trial in range(12):
            kill_at = rng.randint(1, 10)
            learner = Learner(args.learner, work, path,
                              (["--resume"] if trial else []) + set_flags,
                              failpoints=f"learner.checkpoint_write=kill@{kill_at}")
            code = learner.wait()
            if code == 0:
                break
            check(code == -signal.SIGKILL, f"power cut {trial}: killed at write {kill_at} "
                                           f"(exit {code}): {learner.output()[-400:]!r}")
            cuts += 1
            tear(run, rng)
        check(cuts >= 3, f"at least three power cuts happened ({cuts})")
        if code != 0:
            code = Learner(args.learner, work, path, ["--resume"] + set_flags).wait()
        check(code == 0, f"after {cuts} power cuts the run finishes (exit {code})")
        check_steps_once(run, 6)
        check(series(run) == reference and same_adapter(run, reference_run),
              "the series and the final adapter equal the uninterrupted run's")

        # ---- 11. disk full: the run directory on a small tmpfs (or, where mounting
        # is not allowed, a file size limit, which fails writes the same way)
        disk = os.path.join(work, "small_disk")
        os.makedirs(disk)
        checkpoint_bytes = sum(
            os.path.getsize(os.path.join(d, f))
            for d, _, files in os.walk(os.path.join(reference_run, "checkpoints",
                                                    "step_00000006")) for f in files)
        size_kib = (3 * checkpoint_bytes) // 1024 + 64
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k",
                                  "tmpfs", disk], stderr=subprocess.DEVNULL).returncode == 0
        print(f"disk full: {'a tmpfs of' if mounted else 'a file size limit of'} "
              f"{size_kib} KiB (a checkpoint is {checkpoint_bytes // 1024} KiB)")
        try:
            path = config(work, "full", rollout, reward, 6)
            text = open(path).read().replace(f"output_dir: {work}/runs", f"output_dir: {disk}")
            with open(path, "w") as f:
                f.write(text)
            run = os.path.join(disk, "full")
            set_flags = ["--set=run.checkpoint_every=1", "--set=run.keep_checkpoints=5"]
            limit = None if mounted else \
                (lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                            (checkpoint_bytes // 2, checkpoint_bytes // 2)))
            learner = Learner(args.learner, work, path, set_flags, preexec=limit)
            code = learner.wait()
            out = learner.output()
            check(code not in (0, None) and
                  ("No space left on device" in out or "File too large" in out),
                  f"a full disk ends the run, saying so (exit {code}): {out[-400:]!r}")
            done = steps_logged(run)
            with open(os.path.join(run, "metrics.jsonl")) as f:
                for line in f:
                    json.loads(line)  # no torn line
            check(done == list(range(1, len(done) + 1)),
                  f"the steps logged before it are each there once: {done}")
            newest = checkpoint_steps(run)[-1:] or [0]
            check(newest[0] <= (done[-1] if done else 0),
                  f"no checkpoint is ahead of the log: {checkpoint_steps(run)} vs {done}")
            if mounted:
                subprocess.run(["mount", "-o", "remount,size=64m", disk], check=True)
            learner = Learner(args.learner, work, path, ["--resume"] + set_flags)
            code = learner.wait()
            check(code == 0, f"with room again, --resume finishes (exit {code}): "
                             f"{learner.output()[-400:]!r}")
            check_steps_once(run, 6)
            check(series(run) == reference and same_adapter(run, reference_run),
                  "the series and the final adapter equal the uninterrupted run's")
        finally:
            if mounted:
                subprocess.run(["umount", "-l", disk])

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
        remove_work(work, args.keep)
    finish()


if __name__ == "__main__":
    main()
