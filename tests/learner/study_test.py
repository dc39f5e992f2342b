"""`learner study` end to end on the CPU (ctest learner_study): configs/demo/study.yaml,
shortened (fewer steps), run as a user would, with real servers and learner runs.

1. Interruptions: the study is stopped with SIGTERM in the middle of its second run
   (exit 143, that run recorded as interrupted, the first as finished), started again and
   stopped as Ctrl-C does (SIGINT to its process group), started again and killed
   outright (SIGKILL: its children die with it), then started again to the end.
   Every run finishes exactly once (the first is not run again), and each run's
   metrics.jsonl has every step exactly once.
2. The report the study wrote: every figure (PNG and its JSON), each figure's plotted
   data equal to the metrics of the runs it came from; Table 1 equal to the runs'
   `learner eval` tables (eval/eval.json); Table 2 recomputed here from metrics.jsonl.
3. A study with a broken preset (an unknown key), on two units (`devices`, both runs at
   once): that run is recorded as failed with the learner's reason, the other finishes,
   and the study exits 1.
4. A missing model with a Hub id, offline: the study stops at once (exit 2) saying where
   to put the directory, before any run starts.

  study_test.py --learner BUILD/learner/learner --source_dir REPO
"""
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish, require  # noqa: E402

STEPS = 16
RUNS = ["demo-r4", "demo-r16", "demo-r64"]
FIGURES = ["reward", "accuracy", "validation", "entropy", "length", "clipped", "kl",
           "clip_fractions", "grad_norm", "time"]


def read_steps(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "reward_mean" in row:
                rows.append(row)
    return rows


def study_json(out):
    path = os.path.join(out, "study.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def start(learner, study, log, cwd):
    return subprocess.Popen([learner, "study", study], stdout=log, stderr=subprocess.STDOUT,
                            cwd=cwd, start_new_session=True)


def wait_for(predicate, proc, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    require(False, f"{what} (within {timeout} s; the study "
            f"{'exited ' + str(proc.returncode) if proc.poll() is not None else 'is running'})")


def study_processes(out):
    """(pid, command line) of the running processes whose command names the study's
    directory."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if out in cmd and "study_test" not in cmd:
            yield pid, cmd


def learners_alive(out):
    """Learner processes still running on this study's runs (none after a kill)."""
    return [cmd[:120] for _, cmd in study_processes(out)
            if "learner " in cmd or "rollout_server" in cmd or "reward_service" in cmd]


def learner_sessions(out):
    """The session ids of the study's learners running now (/proc/PID/stat)."""
    sids = []
    for pid, cmd in study_processes(out):
        if "--config=" not in cmd:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            sids.append(int(fields[3]))  # after state, ppid, pgrp: session
        except (OSError, IndexError, ValueError):
            continue
    return sids


def checkpoint_steps(run_dir):
    """The steps of a run's complete checkpoints (checkpoints/step_N)."""
    return sorted(int(n[len("step_"):]) for n in os.listdir(os.path.join(run_dir, "checkpoints"))
                  if n.startswith("step_") and n[len("step_"):].isdigit())


def check_report(out):
    report = os.path.join(out, "report")
    check(os.path.isfile(os.path.join(report, "index.html")), "report/index.html is written")
    check(os.path.isfile(os.path.join(report, "report.md")), "report/report.md is written")
    with open(os.path.join(report, "index.html")) as f:
        page = f.read()
    check("http://" not in page.replace("http://www.w3.org", "") and "https://" not in page,
          "index.html loads nothing from the network")
    metrics = {name: {} for name in RUNS}
    for name in RUNS:
        with open(os.path.join(out, "runs", name, "metrics.jsonl")) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                kind = "train" if "reward_mean" in row else "validation"
                metrics[name].setdefault(kind, []).append(row)
    for stem in FIGURES:
        png = os.path.join(report, "figures", stem + ".png")
        data_path = os.path.join(report, "figures", stem + ".json")
        if not check(os.path.isfile(png) and os.path.isfile(data_path),
                     f"figure {stem}: PNG and its data"):
            continue
        with open(png, "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"figure {stem}: a PNG file")
        with open(data_path) as f:
            data = json.load(f)
        lines = [line for panel in data["panels"] for line in panel["lines"]]
        plotted_runs = {os.path.basename(line["run"]) for line in lines}
        check(plotted_runs == set(RUNS), f"figure {stem}: a line for each run ({plotted_runs})")
        mismatched = []
        for line in lines:
            name = os.path.basename(line["run"])
            rows = metrics[name].get("validation" if stem == "validation" else "train", [])
            points = [(r["step"], float(r[line["metric"]])) for r in rows
                      if isinstance(r.get(line["metric"]), (int, float))]
            if [p[0] for p in points] != line["x"] or \
                    any(abs(a - b) > 1e-9 for a, b in zip([p[1] for p in points], line["y"])) \
                    or len(points) != len(line["y"]):
                mismatched.append(f"{name}/{line['metric']}")
        check(not mismatched and lines,
              f"figure {stem}: every plotted line equals its metrics ({len(lines)} lines"
              + (f"; differ: {mismatched}" if mismatched else "") + ")")

    with open(os.path.join(report, "tables.json")) as f:
        tables = json.load(f)
    # Table 1 against each run's eval.json (what `learner eval` wrote at the run's end).
    for name in RUNS:
        with open(os.path.join(out, "runs", name, "eval", "eval.json")) as f:
            evals = json.load(f)
        rows = [r for r in tables["table1"] if os.path.basename(r["run"]) == name]
        check(len(rows) == len(evals), f"Table 1 has one row per eval.json entry of {name} "
              f"({len(rows)} vs {len(evals)})")
        for entry in evals:
            config = "baseline" if entry.get("model") == "base" else "final"
            match = [r for r in rows if r["dataset"] == entry["dataset"] and r["config"] == config]
            if not check(len(match) == 1, f"Table 1: {name} {entry['dataset']} {config} row"):
                continue
            for key, value in entry.items():
                if key.startswith("pass@"):
                    k = key[len("pass@"):]
                    got = match[0]["pass"].get(k, {}).get("value")
                    check(got is not None and abs(got - value) < 1e-12,
                          f"Table 1: {name} {entry['dataset']} {config} {key} = eval.json's "
                          f"({got} vs {value})")
    # Table 2, recomputed: the relative change of mean token entropy between the mean of
    # the first and of the last window (a tenth of the steps, at least one).
    for name in RUNS:
        entropies = [r["entropy"] for r in metrics[name]["train"]]
        window = max(len(entropies) // 10, 1)
        first = sum(entropies[:window]) / window
        last = sum(entropies[-window:]) / window
        want = 100.0 * (last - first) / first
        rows = [r for r in tables["table2"] if os.path.basename(r["run"]) == name]
        check(len(rows) == 1 and rows[0]["window"] == window and
              math.isclose(rows[0]["change_percent"], want, rel_tol=1e-9, abs_tol=1e-9),
              f"Table 2: {name} = {want:+.4f}% over windows of {window} (report: "
              f"{rows[0]['change_percent'] if rows else None})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--learner", required=True)
    parser.add_argument("--source_dir", required=True)
    args = parser.parse_args()
    repo = os.path.abspath(args.source_dir)
    learner = os.path.abspath(args.learner)
    tmp = tempfile.mkdtemp(prefix="microrl-study-")
    try:
        run(repo, learner, tmp)
    finally:
        if os.environ.get("MICRORL_KEEP_TEST_DIRS"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    finish()


def run(repo, learner, tmp):
    # The demo study, shortened: fewer steps, a shorter warm-up, presets by absolute path.
    with open(os.path.join(repo, "configs", "demo", "study.yaml")) as f:
        study = yaml.safe_load(f)
    out = os.path.join(tmp, "study")
    study["output_dir"] = out
    study["runs"] = [os.path.join(repo, p) for p in study["runs"]]
    study["set"].update({"run.max_steps": STEPS, "run.checkpoint_every": 3})
    study["eval"].update({"every": 6, "problems": 40})
    for step in study["prepare"]:
        step["run"] = [a.replace("run.max_steps=650", "run.max_steps=300") for a in step["run"]]
    path = os.path.join(tmp, "study.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(study, f)
    log_path = os.path.join(tmp, "study.log")
    log = open(log_path, "a")

    # 1a. SIGTERM in the middle of the second run.
    proc = start(learner, path, log, repo)
    second = os.path.join(out, "runs", RUNS[1], "metrics.jsonl")
    wait_for(lambda: len(read_steps(second)) >= 4, proc, 900,
             "the second run logs 4 steps")
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
    state = study_json(out)["runs"]
    check(code == 143, f"SIGTERM: the study exits 143 (stopped, resumable) ({code})")
    check(state[RUNS[0]]["status"] == "finished" and state[RUNS[1]]["status"] == "interrupted"
          and state[RUNS[2]]["status"] == "pending",
          f"study.json: first run finished, second interrupted, third pending "
          f"({[state[n]['status'] for n in RUNS]})")
    check(not learners_alive(out), "no learner or server of the study is left running")
    cut = len(read_steps(second))
    checkpoints = checkpoint_steps(os.path.join(out, "runs", RUNS[1]))
    check(cut in checkpoints,
          f"the interrupted run saved its last completed step ({cut}; {checkpoints})")

    # 1b. Started again and stopped as a terminal's Ctrl-C does (SIGINT to the study's
    # process group): the learners run in sessions of their own, so only the study gets it
    # and passes one SIGTERM on; the run saves its last step.
    proc = start(learner, path, log, repo)
    wait_for(lambda: len(read_steps(second)) >= cut + 2, proc, 900,
             "the resumed second run logs 2 more steps")
    sessions = learner_sessions(out)
    check(sessions and all(sid != proc.pid for sid in sessions),
          f"the learners run in sessions of their own, not the study's ({sessions} vs "
          f"{proc.pid}), so a terminal's Ctrl-C reaches only the study")
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=300)
    cut = len(read_steps(second))
    checkpoints = checkpoint_steps(os.path.join(out, "runs", RUNS[1]))
    check(code == 143 and cut in checkpoints,
          f"Ctrl-C: the study exits 143 and the run saved its last completed step "
          f"(exit {code}; step {cut}; checkpoints {checkpoints})")

    # 1c. Started again, then killed outright while the second run resumes.
    proc = start(learner, path, log, repo)
    wait_for(lambda: len(read_steps(second)) >= cut + 2, proc, 900,
             "the resumed second run logs 2 more steps")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while learners_alive(out) and time.time() < deadline:
        time.sleep(0.2)
    check(not learners_alive(out), "SIGKILL: the study's children died with it")

    # 1d. To the end.
    proc = start(learner, path, log, repo)
    code = proc.wait(timeout=1800)
    log.flush()
    with open(log_path) as f:
        text = f.read()
    check(code == 0, f"the third start runs the study to its end (exit {code})")
    state = study_json(out)["runs"]
    check(all(state[n]["status"] == "finished" for n in RUNS),
          f"study.json: every run finished ({[state[n]['status'] for n in RUNS]})")
    check(state[RUNS[0]]["attempts"] == 1, f"the first run ran once "
          f"({state[RUNS[0]]['attempts']} attempts)")
    check(text.count(f"{RUNS[0]}: finished earlier: skipped") == 3,
          "every restart skipped the finished first run")
    check("resuming from its last checkpoint" in text, "the interrupted run resumed")
    for name in RUNS:
        steps = [r["step"] for r in read_steps(os.path.join(out, "runs", name, "metrics.jsonl"))]
        check(steps == list(range(1, STEPS + 1)),
              f"{name}: metrics.jsonl has steps 1..{STEPS} each exactly once ({steps})")
    check(all(any(line.startswith(f"[study] {n}: step") and "run ETA" in line and
                  "study: " in line and "runs done, ETA" in line
                  for line in text.splitlines()) for n in RUNS),
          "progress lines for every run, with its ETA and the study's")

    # 2. The report.
    check_report(out)

    # 3. A broken preset among good ones.
    broken = os.path.join(tmp, "broken.yaml")
    with open(broken, "w") as f:
        f.write("base: " + os.path.join(repo, "configs", "demo", "_grpo.yaml") + "\n"
                "run: {name: broken}\nlora: {rank: 8, alpha: 8}\noptim: {learning_rate: 0.1}\n")
    study2 = {"output_dir": os.path.join(tmp, "study2"),
              "runs": [broken, os.path.join(repo, "configs", "demo", "grpo-r4.yaml")],
              "set": {"model.path": os.path.join(out, "assets", "warm_model"),
                      "data.train": os.path.join(out, "assets", "data", "train.jsonl"),
                      "run.max_steps": 3},
              "rollout_server": study["rollout_server"],
              # Two units: both runs at once, each with its own CUDA_VISIBLE_DEVICES.
              "devices": ["0", "1"]}
    path2 = os.path.join(tmp, "study2.yaml")
    with open(path2, "w") as f:
        yaml.safe_dump(study2, f)
    proc = subprocess.run([learner, "study", path2], capture_output=True, text=True, cwd=repo,
                          timeout=900)
    print(proc.stdout[-3000:] + proc.stderr[-2000:])
    state = study_json(study2["output_dir"]).get("runs", {})
    check(proc.returncode == 1, f"a study with a failed run exits 1 ({proc.returncode})")
    check(state.get("broken", {}).get("status") == "failed" and
          "learning_rate" in (state["broken"].get("reason") or ""),
          f"the broken preset is recorded as failed, with the reason naming the bad key "
          f"({(state.get('broken', {}).get('reason') or '')[:300]!r})")
    check(state.get("demo-r4", {}).get("status") == "finished",
          "the other run of that study finished")
    check(len(read_steps(os.path.join(study2["output_dir"], "runs", "demo-r4",
                                      "metrics.jsonl"))) == 3, "with its 3 steps")
    units = sorted(str(e.get("unit")) for e in state.values())
    check(units == ["0", "1"], f"devices: the two runs ran on the two units ({units})")

    # 4. A missing model that names its Hub id, with the Hub unreachable.
    missing = os.path.join(tmp, "missing.yaml")
    with open(missing, "w") as f:
        f.write("base: " + os.path.join(repo, "configs", "demo", "_grpo.yaml") + "\n"
                "run: {name: missing}\nlora: {rank: 8}\n"
                f"model: {{path: {tmp}/models/Nowhere-0.5B, hub_id: example/Nowhere-0.5B, "
                "revision: 0123456789abcdef0123456789abcdef01234567}\n")
    study3 = {"output_dir": os.path.join(tmp, "study3"), "runs": [missing]}
    path3 = os.path.join(tmp, "study3.yaml")
    with open(path3, "w") as f:
        yaml.safe_dump(study3, f)
    t = time.time()
    proc = subprocess.run([learner, "study", path3], capture_output=True, text=True, cwd=repo,
                          timeout=300, env=dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9"))
    seconds = time.time() - t
    print(proc.stdout[-2000:] + proc.stderr[-2000:])
    check(proc.returncode == 2 and seconds < 60,
          f"offline, a missing model stops the study at once (exit {proc.returncode}, "
          f"{seconds:.1f} s)")
    check("cannot reach" in proc.stderr, "the Hub was found unreachable (not a missing CLI)")
    check(f"{tmp}/models/Nowhere-0.5B" in proc.stderr and "put the" in proc.stderr,
          "the message says where to put the model directory")
    check(not os.path.exists(os.path.join(study3["output_dir"], "runs", "missing")),
          "no run started")


if __name__ == "__main__":
    main()
