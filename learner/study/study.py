"""`learner study STUDY.yaml`: runs a grid of learner presets, one ordinary learner run per
preset, then writes the study's report. Survives interruptions: run it again and finished
runs are skipped, interrupted ones resume from their last checkpoint.

  learner study STUDY.yaml [--dry_run] [--no_retry_failed] [--no_report]
  (python3 learner/study/study.py STUDY.yaml --learner BUILD/learner/learner ...)

The study file (paths relative to the directory the command runs in, like a preset's):

  output_dir: runs/study            # the study: study.json, logs/, runs/<run.name>/, report/
  runs:                             # presets, in order; globs and {a,b} alternatives
    - configs/paper/*-r{8,64,256}.yaml
  exclude: []                       # presets (globs) to leave out
  set: {optim.lr: 2.0e-6}           # overrides for every run (a mapping, or "k=v;k=v")
  eval:                             # eval.* keys for every run (the evaluation sets)
    path: ../shared/data/math500.jsonl
    final_datasets: [aime24, aime25, amc23]
  prepare:                          # commands run once, in order, before the first run;
    - creates: "{output_dir}/assets/model/config.json"   # skipped when it exists
      cwd: "{output_dir}"                                 # optional
      run: ["{python}", "{repo}/deploy/demo/demo.py", "--stage", "assets", "--out", "assets"]
  reward_service: {flags: []}       # one reward service for the whole study
  rollout_server: {flags: ["--kv_cache_mb=8192"]}   # one per run, serving its model
  devices: []                       # e.g. ["0", "1"]: that many runs at once, each with
                                    # CUDA_VISIBLE_DEVICES set to its unit; empty: one at a time
  fetch_models: true                # download missing models (model.hub_id) before any run

Placeholders in prepare steps and in set/eval values: {python} (this venv's), {learner},
{build_dir}, {repo}, {output_dir} (absolute). Each run is `learner --config=PRESET --set=...` with run.output_dir set to
<output_dir>/runs and the addresses of the study's services; its output goes to
<output_dir>/logs/<run>.log. State per run is in <output_dir>/study.json (pending, running,
finished, failed with the reason, interrupted), written atomically after every change.

Progress: a line per run every few steps and at its end, with the study's runs done and an
ETA from the measured step times (remaining steps of every unfinished run times the mean
step time measured for its model, or for any model when its own has none yet).

Models by name: a preset whose model.path lacks config.json and names model.hub_id (and
model.revision) is downloaded by deploy/fetch_model.sh before the first run starts;
offline, the study stops at once saying where to put the directory. Nothing is downloaded
while a run trains.

SIGTERM/SIGINT (Ctrl-C): every learner in flight saves its last completed step and exits,
the services stop, study.json records those runs as interrupted, and the study exits 143;
a second signal stops the learners at once, unsaved (their newest checkpoint remains).
Children die with the study (PR_SET_PDEATHSIG) if it is killed outright; the next start
resumes from the newest verified checkpoint. Exit status: 0 when every run finished,
1 when one failed (the others still ran) or did not run, 2 for a bad study file or a
missing model.
"""
import argparse
import collections
import ctypes
import datetime
import fcntl
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class StudyError(Exception):
    pass


# ------------------------------------------------------------------------------ config


def expand_braces(pattern):
    """a{b,c}d -> [abd, acd] (nested and several groups)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    out = []
    for alt in match.group(1).split(","):
        out += expand_braces(pattern[:match.start()] + alt + pattern[match.end():])
    return out


def resolve_presets(patterns, exclude, where):
    presets, excluded = [], set()
    for pattern in exclude or []:
        for p in expand_braces(pattern):
            excluded.update(os.path.normpath(x) for x in glob.glob(p))
    for pattern in patterns:
        matched = []
        for p in expand_braces(pattern):
            found = sorted(glob.glob(p))
            if not found and not glob.has_magic(p):
                found = [p]  # a named file that is missing: reported as that run's failure
            matched += found
        if not matched:
            raise StudyError(f"{where}: runs: '{pattern}' matches no preset")
        for p in matched:
            p = os.path.normpath(p)
            if p not in excluded and p not in presets and not os.path.basename(p).startswith("_"):
                presets.append(p)
    return presets


def deep_merge(base, over):
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_preset(path, depth=0):
    """The preset with its base: files merged in (as the learner reads it)."""
    if depth > 8:
        raise StudyError(f"{path}: base: nests too deep")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise StudyError(f"{path}: not a mapping")
    base = data.pop("base", None)
    if base:
        data = deep_merge(load_preset(os.path.join(os.path.dirname(path), base), depth + 1),
                          data)
    return data


def parse_set(value, where):
    """'a.b=1;c=x' or {a.b: 1} -> [(key, text)]."""
    if not value:
        return []
    if isinstance(value, dict):
        return [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in value.items()]
    if isinstance(value, str):
        pairs = []
        for item in value.split(";"):
            if item.strip():
                if "=" not in item:
                    raise StudyError(f"{where}: set: '{item}' is not key=value")
                k, v = item.split("=", 1)
                pairs.append((k.strip(), v.strip()))
        return pairs
    raise StudyError(f"{where}: set: a mapping or a 'k=v;k=v' string")


def lookup(config, dotted, overrides, default=None):
    for k, v in reversed(overrides):
        if k == dotted:
            return yaml.safe_load(v)
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def load_study(path):
    with open(path) as f:
        try:
            study = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise StudyError(f"{path}: {e}")
    if not isinstance(study, dict):
        raise StudyError(f"{path}: a study is a mapping (see learner study --help)")
    known = {"name", "output_dir", "runs", "exclude", "set", "eval", "prepare",
             "reward_service", "rollout_server", "devices", "fetch_models"}
    unknown = sorted(set(study) - known)
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    if not study.get("runs"):
        raise StudyError(f"{path}: runs: lists no preset")
    if isinstance(study["runs"], str):
        study["runs"] = [study["runs"]]
    study.setdefault("output_dir", os.path.join("runs", "study-" + os.path.splitext(
        os.path.basename(path))[0]))
    overrides = parse_set(study.get("set"), path)
    for key, value in (study.get("eval") or {}).items():
        overrides.append((f"eval.{key}", value if isinstance(value, str) else json.dumps(value)))
    study["_overrides"] = overrides
    devices = study.get("devices") or []
    if not isinstance(devices, list):
        raise StudyError(f"{path}: devices: a list of CUDA device numbers")
    study["devices"] = [str(d) for d in devices]
    return study


# ------------------------------------------------------------------------------ state


def write_json_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def fmt_seconds(s):
    if s is None:
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


_stopping = threading.Event()


try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded once, not in a forked child
except OSError:
    _LIBC = None
_STUDY_PID = os.getpid()


def _set_pdeathsig():
    """The child is killed when the study dies, even by SIGKILL (PR_SET_PDEATHSIG); a study
    that died before this ran leaves the child no parent to wait for, so it exits."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)
    if os.getppid() != _STUDY_PID:
        os._exit(1)


class Study:
    def __init__(self, path, args):
        self.path = path
        self.args = args
        self.spec = load_study(path)
        self.out = os.path.abspath(self.spec["output_dir"])
        self.logs = os.path.join(self.out, "logs")
        self.runs_dir = os.path.join(self.out, "runs")
        self.lock = threading.RLock()  # the signal handler may take it in the main thread
        self.procs = {}  # run name -> learner Popen
        self.services = []
        self.spec["_overrides"] = [(k, self.placeholders(v))
                                   for k, v in self.spec["_overrides"]]

    # -- runs ---------------------------------------------------------------------------
    def plan(self):
        presets = resolve_presets(self.spec["runs"], self.spec.get("exclude"), self.path)
        runs = []
        for preset in presets:
            entry = {"preset": preset, "name": os.path.splitext(os.path.basename(preset))[0],
                     "max_steps": None, "model": None, "hub_id": None, "revision": None,
                     "device": "cpu", "error": None}
            try:
                config = load_preset(preset)
                ov = self.spec["_overrides"]
                entry["name"] = str(lookup(config, "run.name", ov) or entry["name"])
                entry["max_steps"] = lookup(config, "run.max_steps", ov)
                entry["model"] = lookup(config, "model.path", ov)
                entry["hub_id"] = lookup(config, "model.hub_id", ov)
                entry["revision"] = lookup(config, "model.revision", ov)
                entry["device"] = str(lookup(config, "model.device", ov, "cpu"))
                entry["rank"] = lookup(config, "lora.rank", ov)
                entry["final_eval"] = bool(lookup(config, "eval.final_datasets", ov))
            except (OSError, yaml.YAMLError, StudyError) as e:
                entry["error"] = f"{preset}: {e}"
            runs.append(entry)
        names = [r["name"] for r in runs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise StudyError(f"{self.path}: several presets have run.name {', '.join(dupes)}")
        return runs

    def load_state(self, runs):
        path = os.path.join(self.out, "study.json")
        state = {}
        if os.path.exists(path):
            with open(path) as f:
                state = json.load(f)
        state.update({"study": os.path.abspath(self.path), "output_dir": self.out,
                      "devices": self.spec["devices"]})
        old = state.get("runs", {})
        state["runs"] = {}
        for r in runs:
            entry = old.get(r["name"], {"status": "pending", "attempts": 0,
                                        "steps_done": 0, "step_seconds": None})
            entry.update({"preset": r["preset"], "max_steps": r["max_steps"],
                          "model": r["model"], "rank": r.get("rank"),
                          "run_dir": os.path.join(self.runs_dir, r["name"])})
            state["runs"][r["name"]] = entry
        self.state = state
        self.save()

    def save(self):
        with self.lock:
            self.state["updated"] = now()
            # A copy made by json's C encoder, which no other thread's update interleaves.
            snapshot = json.loads(json.dumps(self.state))
            write_json_atomic(os.path.join(self.out, "study.json"), snapshot)

    def eta(self):
        """Seconds left over the unfinished runs, from the measured step times."""
        per_model, every = {}, []
        for r in self.state["runs"].values():
            if r.get("step_seconds"):
                per_model.setdefault(r["model"], []).append(r["step_seconds"])
                every.append(r["step_seconds"])
        if not every:
            return None
        total = 0.0
        for r in self.state["runs"].values():
            if r["status"] in ("finished", "failed") or not r.get("max_steps"):
                continue
            times = per_model.get(r["model"]) or every
            step = r.get("step_seconds") or sum(times) / len(times)
            total += max(r["max_steps"] - r.get("steps_done", 0), 0) * step
        return total / max(len(self.spec["devices"]), 1)

    def progress(self, name, text):
        runs = self.state["runs"]
        done = sum(r["status"] == "finished" for r in runs.values())
        failed = sum(r["status"] == "failed" for r in runs.values())
        whole = f"study: {done}/{len(runs)} runs done"
        if failed:
            whole += f", {failed} failed"
        whole += f", ETA {fmt_seconds(self.eta())}"
        print(f"[study] {name}: {text} | {whole}", flush=True)

    # -- services -----------------------------------------------------------------------
    def start_service(self, name, argv, env=None):
        ready = os.path.join(self.logs, name + ".ready")
        if os.path.exists(ready):
            os.remove(ready)
        log = open(os.path.join(self.logs, name + ".log"), "a")
        proc = subprocess.Popen(argv + ["--port=0", "--metrics_port=0", f"--ready_file={ready}"],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_set_pdeathsig, start_new_session=True)
        deadline = time.time() + 600
        while not os.path.exists(ready):
            if proc.poll() is not None or time.time() > deadline or _stopping.is_set():
                stop_procs([proc])
                raise StudyError(f"{name} did not start; {log.name} ends:\n{tail(log.name)}")
            time.sleep(0.05)
        with open(ready) as f:
            return proc, json.load(f)

    def run_one(self, run, unit):
        name = run["name"]
        entry = self.state["runs"][name]
        env = dict(os.environ)
        if unit is not None:
            env["CUDA_VISIBLE_DEVICES"] = unit
        with self.lock:
            entry.update({"status": "running", "attempts": entry.get("attempts", 0) + 1,
                          "started": now(), "reason": None, "unit": unit})
        self.save()
        if run["error"]:
            return self.fail(name, run["error"])
        run_dir = entry["run_dir"]
        checkpoints = os.path.join(run_dir, "checkpoints")
        resume = os.path.isdir(checkpoints) and any(
            n.startswith("step_") and not n.endswith(".tmp") for n in os.listdir(checkpoints))
        if not resume and os.path.isdir(run_dir):
            shutil.rmtree(run_dir)  # nothing to resume from: a clean start
        try:
            rollout, ready = self.start_service(
                f"rollout_server-{name}",
                [self.bin("rollout_server"), f"--model={run['model']}",
                 f"--device={run['device']}",
                 *((self.spec.get("rollout_server") or {}).get("flags") or [])], env)
        except StudyError as e:
            return self.fail(name, str(e)) if not _stopping.is_set() else self.interrupted(name)
        sets = [f"{k}={v}" for k, v in self.spec["_overrides"]]
        sets += [f"run.output_dir={self.runs_dir}", f"run.name={name}",
                 f"rollout.address=127.0.0.1:{ready['grpc_port']}",
                 f"reward.address=127.0.0.1:{self.reward_port}"]
        argv = [self.args.learner, f"--config={run['preset']}", "--set=" + ";".join(sets),
                "--port=0", "--metrics_port=0"] + (["--resume"] if resume else [])
        log_path = os.path.join(self.logs, f"{name}.log")
        started = time.time()
        every = max((run["max_steps"] or 20) // 10, 1)
        self.progress(name, ("resuming from its last checkpoint" if resume else "starting") +
                      f" ({run['preset']}, unit {unit or 'default'})")
        proc = None
        try:
            last_lines = self.follow(name, run, entry, argv, env, log_path, every)
            proc = self.procs.get(name)
        finally:
            # Whatever happened, no learner or server of this run outlives it.
            with self.lock:
                proc = self.procs.pop(name, proc)
            if proc is not None and proc.poll() is None:
                stop_procs([proc], timeout=300)
            stop_procs([rollout])
        with self.lock:
            entry["seconds"] = round(entry.get("seconds", 0) + time.time() - started, 1)
        done = (entry.get("steps_done") or 0) >= (entry.get("max_steps") or 0) and (
            not run.get("final_eval") or
            os.path.isfile(os.path.join(run_dir, "eval", "eval.json")))
        if _stopping.is_set() and not (proc.returncode == 0 and done):
            return self.interrupted(name)
        if proc.returncode != 0:
            said = list(last_lines) or ["(no output)"]
            return self.fail(name, "\n".join(
                [f"learner exited with {proc.returncode}: {said[-1]}", *said[:-1],
                 f"(whole output: {log_path})"]))
        with self.lock:
            entry.update({"status": "finished", "finished": now(), "reason": None})
        self.save()
        self.progress(name, f"finished ({entry['steps_done']} steps, "
                      f"{fmt_seconds(entry['seconds'])} over {entry['attempts']} attempt(s))")

    def follow(self, name, run, entry, argv, env, log_path, every):
        """Runs the learner, logging its output and following its steps; returns its last
        lines of output."""
        first_step, steps_this_attempt, last_print = None, 0, 0
        with open(log_path, "a") as log:
            log.write(f"=== {now()} attempt {entry['attempts']}: {' '.join(argv)}\n")
            log.flush()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env, preexec_fn=_set_pdeathsig,
                                    start_new_session=True)
            with self.lock:
                self.procs[name] = proc
            if _stopping.is_set():
                proc.send_signal(signal.SIGTERM)
            last_lines = collections.deque(maxlen=8)
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if line.strip():
                    last_lines.append(line.rstrip())
                m = re.match(r"step (\d+)/(\d+)", line)
                if m:
                    step, total = int(m.group(1)), int(m.group(2))
                    steps_this_attempt += 1
                    if first_step is None:
                        first_step = time.time()  # the first step's time includes start-up
                    with self.lock:
                        if steps_this_attempt > 1:
                            entry["step_seconds"] = round((time.time() - first_step) /
                                                          (steps_this_attempt - 1), 4)
                        entry["steps_done"], entry["max_steps"] = step, total
                    self.save()
                    if step == 1 or step - last_print >= every or step == total:
                        last_print = step
                        left = (total - step) * (entry["step_seconds"] or 0)
                        self.progress(name, f"step {step}/{total}, "
                                      f"{entry['step_seconds'] or 0:.2f} s/step, "
                                      f"run ETA {fmt_seconds(left)}")
            proc.wait()
        return last_lines

    def fail(self, name, reason):
        with self.lock:
            self.state["runs"][name].update({"status": "failed", "reason": reason,
                                             "finished": now()})
        self.save()
        self.progress(name, "FAILED: " + reason.splitlines()[0])
        for line in reason.splitlines()[1:]:
            print(f"[study]   {line}", flush=True)

    def interrupted(self, name):
        with self.lock:
            self.state["runs"][name].update({"status": "interrupted"})
        self.save()
        self.progress(name, "interrupted (resumes when the study runs again)")

    def bin(self, name):
        path = os.path.join(self.args.build_dir, name, name)
        if not os.access(path, os.X_OK):
            raise StudyError(f"{path} is missing (build the project: bash deploy/setup.sh)")
        return path

    # -- the whole ----------------------------------------------------------------------
    def placeholders(self, text):
        return (text.replace("{python}", sys.executable)
                .replace("{learner}", self.args.learner)
                .replace("{build_dir}", self.args.build_dir)
                .replace("{repo}", REPO).replace("{output_dir}", self.out))

    def prepare(self):
        for i, step in enumerate(self.spec.get("prepare") or []):
            if not isinstance(step, dict) or not isinstance(step.get("run"), list):
                raise StudyError(f"{self.path}: prepare[{i}]: needs run: [argv...]")
            creates = self.placeholders(str(step.get("creates", "")))
            if creates and os.path.exists(creates):
                continue
            argv = [self.placeholders(str(a)) for a in step["run"]]
            cwd = self.placeholders(str(step["cwd"])) if step.get("cwd") else None
            print(f"[study] prepare: {' '.join(argv)}" + (f" (in {cwd})" if cwd else ""),
                  flush=True)
            log_path = os.path.join(self.logs, f"prepare-{i}.log")
            with open(log_path, "a") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                        preexec_fn=_set_pdeathsig, start_new_session=True)
                with self.lock:
                    self.procs[f"prepare-{i}"] = proc
                if _stopping.is_set():
                    proc.send_signal(signal.SIGTERM)
                proc.wait()
                with self.lock:
                    self.procs.pop(f"prepare-{i}", None)
            if _stopping.is_set():
                return False
            if proc.returncode != 0:
                raise StudyError(f"prepare[{i}] ({' '.join(argv)}) exited with "
                                 f"{proc.returncode}; {log_path} ends:\n{tail(log_path)}")
            if creates and not os.path.exists(creates):
                raise StudyError(f"prepare[{i}] did not create {creates}")
        return True

    def check_models(self, runs):
        """Every model directory exists, or is downloaded now (never during a run)."""
        missing = {}
        for r in runs:
            if r["error"] or not r["model"]:
                continue
            if not os.path.isfile(os.path.join(r["model"], "config.json")):
                missing.setdefault(r["model"], r)
        for model, r in missing.items():
            if not r["hub_id"]:
                raise StudyError(
                    f"{model}: no model there (no config.json), and {r['preset']} names no "
                    f"model.hub_id to download it from: put the Hugging Face model "
                    f"directory at {os.path.abspath(model)}")
            if self.spec.get("fetch_models", True) is False or self.args.dry_run:
                raise StudyError(
                    f"{model}: missing; download it with: bash {REPO}/deploy/fetch_model.sh "
                    f"{r['hub_id']} {r['revision'] or 'main'} {model}")
            print(f"[study] fetching {r['hub_id']}@{r['revision']} into {model}", flush=True)
            proc = subprocess.Popen(["bash", os.path.join(REPO, "deploy", "fetch_model.sh"),
                                     r["hub_id"], r["revision"] or "main", model],
                                    preexec_fn=_set_pdeathsig, start_new_session=True)
            with self.lock:
                self.procs["fetch"] = proc
            proc.wait()
            with self.lock:
                self.procs.pop("fetch", None)
            if _stopping.is_set():
                return False
            if proc.returncode != 0:
                raise StudyError(f"{model}: could not download {r['hub_id']} (above); "
                                 f"put the model directory at {os.path.abspath(model)} "
                                 f"and run the study again")

    def run(self):
        runs = self.plan()
        if self.args.dry_run:
            for r in runs:
                print(f"{r['name']}: {r['preset']} model={r['model']} "
                      f"max_steps={r['max_steps']}" + (f" ERROR {r['error']}" if r["error"] else ""))
            return 0
        os.makedirs(self.logs, exist_ok=True)
        self.study_lock = open(os.path.join(self.out, "study.lock"), "w")
        try:
            fcntl.flock(self.study_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StudyError(f"{self.out}: another study is running there (study.lock)")
        for name in ("learner", "rollout_server", "reward_service"):
            self.bin(name)
        self.load_state(runs)
        if not self.prepare():
            return 143
        if self.check_models(runs) is False:
            return 143

        todo = []
        for r in runs:
            entry = self.state["runs"][r["name"]]
            if entry["status"] == "finished":
                self.progress(r["name"], "finished earlier: skipped")
            elif entry["status"] == "failed" and self.args.no_retry_failed:
                self.progress(r["name"], "failed earlier: skipped (--no_retry_failed)")
            else:
                entry["status"] = "pending"
                todo.append(r)
        self.save()
        if todo:
            reward, ready = self.start_service(
                "reward_service", [self.bin("reward_service"),
                                   *((self.spec.get("reward_service") or {}).get("flags") or [])])
            self.services.append(reward)
            self.reward_port = ready["grpc_port"]
            units = self.spec["devices"] or [None]
            queue = list(todo)
            queue_lock = threading.Lock()

            def worker(unit):
                while not _stopping.is_set():
                    with queue_lock:
                        if not queue:
                            return
                        r = queue.pop(0)
                    try:
                        self.run_one(r, unit)
                    except Exception as e:  # noqa: BLE001 - recorded; the study goes on
                        self.fail(r["name"], f"{type(e).__name__}: {e}")

            threads = [threading.Thread(target=worker, args=(u,)) for u in units]
            for t in threads:
                t.start()
            # The main thread waits, so that signals reach the handler at once.
            while any(t.is_alive() for t in threads):
                time.sleep(0.2)
            stop_procs(self.services)
        statuses = [e["status"] for e in self.state["runs"].values()]
        self.state["finished"] = all(s == "finished" for s in statuses)
        self.save()
        if _stopping.is_set():
            print("[study] stopped: run the same command again to resume", flush=True)
            return 143
        if not self.args.no_report:
            report = subprocess.run([sys.executable, os.path.join(REPO, "learner", "report",
                                                                  "report.py"), self.out])
            if report.returncode == 0:
                print(f"[study] report: {os.path.join(self.out, 'report', 'index.html')}")
            else:
                print("[study] the report failed (above)", flush=True)
        failed = [n for n, e in self.state["runs"].items() if e["status"] == "failed"]
        unfinished = [n for n, e in self.state["runs"].items()
                      if e["status"] not in ("finished", "failed")]
        print(f"[study] {statuses.count('finished')}/{len(statuses)} runs finished" +
              (f"; failed: {', '.join(failed)} (reasons in {self.out}/study.json)"
               if failed else "") +
              (f"; not run: {', '.join(unfinished)}" if unfinished else ""), flush=True)
        return 1 if failed or unfinished else 0

    def on_signal(self, signum, frame):
        # The children run in sessions of their own, so a terminal's Ctrl-C reaches only
        # the study, which passes one SIGTERM on: the learners save their last completed
        # step. A second signal is passed on too, and stops them at once (unsaved).
        if not _stopping.is_set():
            print("[study] stopping: each learner saves its last completed step "
                  "(a second signal stops them at once)", flush=True)
        _stopping.set()
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)


def stop_procs(procs, timeout=30):
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def main():
    parser = argparse.ArgumentParser(
        prog="learner study", description=__doc__.split("\n")[0],
        epilog="The study file's keys are described in learner/study/study.py's header "
               "and docs/learner.md#studies.")
    parser.add_argument("study")
    parser.add_argument("--learner", default=os.path.join(REPO, "build", "learner", "learner"))
    parser.add_argument("--build_dir", default="")
    parser.add_argument("--dry_run", action="store_true",
                        help="list the runs the study would make, and stop")
    parser.add_argument("--no_retry_failed", action="store_true",
                        help="leave runs that failed earlier as they are")
    parser.add_argument("--no_report", action="store_true",
                        help="do not write the report at the end")
    args = parser.parse_args()
    args.learner = os.path.abspath(args.learner)
    args.build_dir = os.path.abspath(args.build_dir or
                                     os.path.dirname(os.path.dirname(args.learner)))
    try:
        study = Study(args.study, args)
        signal.signal(signal.SIGTERM, study.on_signal)
        signal.signal(signal.SIGINT, study.on_signal)
        sys.exit(study.run())
    except (StudyError, OSError) as e:
        print(f"learner study: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
