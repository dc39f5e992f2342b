"""The CPU demo: a tiny model learns two-digit addition with GRPO, visibly.

Run through deploy/demo.sh (which sets up and builds first):

  demo.py [--out runs/demo] [--seed 0] [--quick] [--python_reward] [--check_dashboard]

Steps, each printed as it runs:
 1. make_demo.py creates the model (a small Qwen2 with random weights), its byte-level
    tokenizer and the data (GRPO problems, worked examples, held-out problems);
 2. starts reward_service (or, with --python_reward, the Python example reward
    service), rollout_server on the model, and a Prometheus server scraping all three
    services' /metrics (if /usr/bin/prometheus exists);
 3. `learner sft`: a supervised warm-up of a LoRA adapter on worked examples;
 4. `learner eval` of the warm-up adapter on the held-out problems ("before");
 5. `learner` GRPO from that adapter against the two services, printing its progress;
 6. `learner eval` of the GRPO adapter ("after"), the before/after table, where the
    adapter was saved, and <out>/summary.json.
With --check_dashboard, every PromQL expression of dashboards/microrl.json is then run
against the Prometheus server (deploy/check_dashboard.py). --quick shortens the run for
tests. The services are stopped at the end; exit status 0 means every step worked.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class DemoError(Exception):
    pass


class DemoStopped(Exception):
    """SIGTERM (docker compose stop): the learner in flight was stopped cleanly."""


# The learner command in flight, which a SIGTERM is passed on to: it saves its last
# completed step and exits, then the demo stops its services and exits 0. As PID 1 of
# a container the demo would otherwise ignore SIGTERM and be SIGKILLed.
_learners = []
_stopping = False


def _on_sigterm(signum, frame):
    global _stopping
    _stopping = True
    for proc in list(_learners):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def say(message):
    print(f"[demo] {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Services:
    """The processes the demo started; stops them all (SIGTERM, then SIGKILL)."""

    def __init__(self, logs):
        self.logs = logs
        self.procs = []

    def start(self, name, argv, ready_file=None, env=None):
        log = open(os.path.join(self.logs, name + ".log"), "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append((name, proc))
        if ready_file is None:
            return proc, None
        deadline = time.time() + 120
        while not os.path.exists(ready_file):
            if proc.poll() is not None or time.time() > deadline:
                raise DemoError(f"{name} did not start; its log ({log.name}) ends:\n"
                                + tail(log.name))
            time.sleep(0.05)
        with open(ready_file) as f:
            return proc, json.load(f)

    def check_alive(self):
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise DemoError(f"{name} exited with {proc.returncode}; its log "
                                f"({os.path.join(self.logs, name + '.log')}) ends:\n"
                                + tail(os.path.join(self.logs, name + ".log")))

    def stop(self):
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def run_learner(argv, cwd, log_path, echo, marks=None, append=False):
    """Runs a learner command to the end; echoes the lines `echo` selects and, into
    `marks["last_step"]`, notes when the last GRPO step line was printed. `append`
    keeps what the log holds (a resumed run)."""
    if _stopping:
        raise DemoStopped()
    with open(log_path, "a" if append else "w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        _learners.append(proc)
        if _stopping:  # the signal came while it was starting
            proc.send_signal(signal.SIGTERM)
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if marks is not None and re.match(r"step \d+/", line):
                marks["last_step"] = time.time()
            if echo(line):
                print("  " + line.rstrip(), flush=True)
        proc.wait()
        _learners.remove(proc)
    if _stopping:
        raise DemoStopped()
    if proc.returncode != 0:
        raise DemoError(f"{' '.join(argv[:2])} failed ({proc.returncode}); "
                        f"{log_path} ends:\n" + tail(log_path))


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mean(values):
    return sum(values) / len(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "demo"),
                        help="directory for the model, data, runs, logs (replaced)")
    parser.add_argument("--build_dir", default=os.path.join(REPO, "build"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="a shortened run (tests): fewer steps and problems")
    parser.add_argument("--sft_steps", type=int, default=0, help="0: the preset's")
    parser.add_argument("--grpo_steps", type=int, default=0, help="0: the preset's")
    parser.add_argument("--eval_problems", type=int, default=200)
    parser.add_argument("--eval_samples", type=int, default=4)
    parser.add_argument("--python_reward", action="store_true",
                        help="score with reward_service/examples/python_reward_server.py")
    parser.add_argument("--sft_adapter", default="",
                        help="skip the warm-up and start from this adapter (made by an "
                             "earlier demo with the same --seed)")
    parser.add_argument("--prometheus", default="/usr/bin/prometheus",
                        help="Prometheus binary ('' for none)")
    parser.add_argument("--prometheus_port", type=int, default=9090,
                        help="its port (0, or taken: a free one)")
    parser.add_argument("--check_dashboard", action="store_true",
                        help="run every query of dashboards/microrl.json at the end")
    parser.add_argument("--stage", choices=["all", "assets", "train"], default="all",
                        help="assets: only make the model and data; train: use the "
                             "assets already in --out (docker compose splits the demo so)")
    parser.add_argument("--resume", action="store_true",
                        help="with --stage train: keep what an earlier, stopped run "
                        "finished (warm-up, evaluations) and resume GRPO from its last "
                        "checkpoint (docker compose stop, then up)")
    parser.add_argument("--rollout_address", default="",
                        help="use this rollout server (serving <out>/model) instead of "
                             "starting one; dns:name:port for every server a name has")
    parser.add_argument("--reward_address", default="",
                        help="use this reward service instead of starting one")
    parser.add_argument("--learner_host", default="127.0.0.1")
    parser.add_argument("--learner_arg", action="append", default=[],
                        help="an extra flag for the GRPO learner's server (repeatable), "
                             "e.g. --learner_arg=--tls_cert=server.pem")
    parser.add_argument("--insecure_allow_remote", action="store_true",
                        help="pass --insecure_allow_remote to the learner (a --learner_host "
                             "on a private network, e.g. docker compose's)")
    parser.add_argument("--learner_port", type=int, default=0)
    parser.add_argument("--learner_metrics_port", type=int, default=0,
                        help="0: a free port")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process (0: the library's default)")
    args = parser.parse_args()

    started = time.time()
    out = os.path.abspath(args.out)
    build = os.path.abspath(args.build_dir)
    binaries = {name: os.path.join(build, name, name)
                for name in ("learner", "rollout_server", "reward_service")}
    for path in binaries.values():
        if not os.access(path, os.X_OK):
            raise DemoError(f"{path} is missing: build first (bash deploy/setup.sh)")
    sft_steps = args.sft_steps or (650 if args.quick else 800)
    grpo_steps = args.grpo_steps or (40 if args.quick else 150)
    eval_problems = min(args.eval_problems, 100) if args.quick else args.eval_problems
    eval_every = max(grpo_steps // 3, 1)

    if args.check_dashboard and (args.python_reward or args.reward_address):
        raise DemoError("--check_dashboard needs the demo's own reward_service (its "
                        "panels query reward_service's metrics)")
    sft_adapter = os.path.abspath(args.sft_adapter) if args.sft_adapter else ""
    if sft_adapter and not os.path.isfile(os.path.join(sft_adapter,
                                                       "adapter_config.json")):
        raise DemoError(f"--sft_adapter {sft_adapter}: no adapter_config.json there")
    env = dict(os.environ, HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    logs = os.path.join(out, "logs")
    if args.stage == "train":
        if not os.path.isfile(os.path.join(out, "model", "config.json")):
            raise DemoError(f"{out}/model: no model (run --stage assets first)")
        kept = ("runs", "evals") if args.resume else ()
        for name in ("runs", "evals", "prometheus", "summary.json"):
            if name in kept:
                continue
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
        say(f"1/6 using the model, tokenizer and data in {out}")
    else:
        if os.path.exists(out):
            shutil.rmtree(out)
        say(f"1/6 making the model, tokenizer and data in {out} (seed {args.seed})")
        os.makedirs(out)
        subprocess.run([sys.executable, os.path.join(HERE, "make_demo.py"), "--out", out,
                        "--seed", str(args.seed)], check=True, env=env)
        for name in ("sft.yaml", "grpo.yaml"):
            shutil.copy(os.path.join(HERE, name), os.path.join(out, name))
        if args.stage == "assets":
            return
    os.makedirs(logs, exist_ok=True)

    services = Services(logs)
    summary = {"seed": args.seed, "quick": args.quick, "sft_steps": sft_steps,
               "grpo_steps": grpo_steps, "reward_service": "python" if args.python_reward
               else "reward_service"}
    try:
        say("2/6 starting the reward service, the rollout server and Prometheus")
        if args.reward_address:
            reward = {"grpc_port": 0, "metrics_port": 0}
        elif args.python_reward:
            _, reward = services.start(
                "reward_service",
                [sys.executable, os.path.join(REPO, "reward_service", "examples",
                                              "python_reward_server.py"),
                 "--port=0", f"--ready_file={logs}/reward_service.ready"],
                f"{logs}/reward_service.ready", env)
        else:
            _, reward = services.start(
                "reward_service", [binaries["reward_service"], "--port=0",
                                   "--metrics_port=0",
                                   f"--ready_file={logs}/reward_service.ready"],
                f"{logs}/reward_service.ready", env)
        if args.rollout_address:
            rollout = {"grpc_port": 0, "metrics_port": 0}
        else:
            _, rollout = services.start(
                "rollout_server", [binaries["rollout_server"], "--port=0",
                                   "--metrics_port=0",
                                   f"--ready_file={logs}/rollout_server.ready",
                                   f"--model={out}/model", "--max_model_len=128", "--kv_cache_mb=32"],
                f"{logs}/rollout_server.ready", env)
        reward_address = args.reward_address or f"127.0.0.1:{reward['grpc_port']}"
        rollout_address = args.rollout_address or f"127.0.0.1:{rollout['grpc_port']}"
        # dns:name:port (docker compose --scale rollout_server=N): GRPO spreads its groups
        # over every address the name has; the evaluations use the name as it is.
        grpo_rollout = (f'rollout.addresses=["{rollout_address}"]'
                        if rollout_address.startswith("dns:")
                        else f"rollout.address={rollout_address}")
        rollout_address = rollout_address.removeprefix("dns:")
        learner_metrics = args.learner_metrics_port or free_port()
        prometheus_url = ""
        if args.prometheus and os.access(args.prometheus, os.X_OK):
            port = args.prometheus_port
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            except OSError:
                port = 0
            port = port or free_port()
            targets = {"learner": learner_metrics}
            if rollout["metrics_port"]:
                targets["rollout_server"] = rollout["metrics_port"]
            if reward["metrics_port"]:
                targets["reward_service"] = reward["metrics_port"]
            with open(os.path.join(out, "prometheus.yml"), "w") as f:
                f.write("global: {scrape_interval: 2s, evaluation_interval: 2s}\n"
                        "scrape_configs:\n")
                for job, target in targets.items():
                    f.write(f"  - job_name: {job}\n"
                            f"    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n")
            services.start("prometheus", [
                args.prometheus, f"--config.file={out}/prometheus.yml",
                f"--storage.tsdb.path={out}/prometheus",
                f"--web.listen-address=127.0.0.1:{port}"], None, env)
            prometheus_url = f"http://127.0.0.1:{port}"
            say(f"    Prometheus at {prometheus_url} (scraping every 2 s)")
        elif args.check_dashboard:
            raise DemoError(f"--check_dashboard needs Prometheus ({args.prometheus})")
        say(f"    reward service {reward_address}, rollout server {rollout_address}; "
            f"logs in {logs}")

        done_sft = os.path.join(out, "runs", "sft", "adapter")
        if sft_adapter:
            say(f"3/6 warm-up skipped: starting from {sft_adapter}")
        elif args.resume and os.path.isfile(os.path.join(done_sft, "adapter_config.json")):
            say(f"3/6 warm-up: done by an earlier start ({done_sft})")
            sft_adapter = done_sft
        else:
            # A warm-up cut short starts over (it takes a minute).
            shutil.rmtree(os.path.join(out, "runs", "sft"), ignore_errors=True)
            say(f"3/6 warm-up: learner sft, {sft_steps} steps on worked examples")
            t = time.time()
            run_learner([binaries["learner"], "sft", "--config=sft.yaml",
                         f"--set=run.seed={args.seed};run.max_steps={sft_steps}"],
                        out, os.path.join(logs, "sft.log"),
                        lambda line: re.match(r"sft step (\d+)00/", line) is not None)
            summary["sft_seconds"] = round(time.time() - t, 1)
            sft_adapter = os.path.join(out, "runs", "sft", "adapter")
        services.check_alive()

        def evaluate(adapter, name, samples, temperature):
            table = os.path.join(out, "evals", name, "eval.json")
            if args.resume and name.startswith("before") and os.path.isfile(table):
                return read_jsonl_array(table)[0]  # an earlier start's, same adapter
            shutil.rmtree(os.path.join(out, "evals", name), ignore_errors=True)
            run_learner([binaries["learner"], "eval", "--config=grpo.yaml",
                         f"--adapter={adapter}", "--datasets=test=data/test.jsonl",
                         f"--problems={eval_problems}", f"--samples={samples}",
                         f"--temperature={temperature}", "--top_p=0.9", "--max_tokens=48",
                         "--ks=1", f"--out=evals/{name}",
                         f"--rollout_address={rollout_address}",
                         f"--reward_address={reward_address}"],
                        out, os.path.join(logs, f"eval_{name}.log"), lambda line: False)
            return read_jsonl_array(os.path.join(out, "evals", name, "eval.json"))[0]

        say(f"4/6 held-out accuracy of the warm-up adapter ({eval_problems} problems)")
        before = evaluate(sft_adapter, "before", args.eval_samples, 1.0)
        before_greedy = evaluate(sft_adapter, "before_greedy", 1, 0.0)
        say(f"    sampled pass@1 {100 * before['pass@1']:.1f}%, greedy "
            f"{100 * before_greedy['pass@1']:.1f}%")

        grpo_dir = os.path.join(out, "runs", "grpo")
        resume_grpo = args.resume and os.path.isdir(os.path.join(grpo_dir, "checkpoints")) \
            and any(name.startswith("step_") and not name.endswith(".tmp")
                    for name in os.listdir(os.path.join(grpo_dir, "checkpoints")))
        if resume_grpo:
            say(f"5/6 GRPO: resuming {grpo_dir} from its last checkpoint ({grpo_steps} steps)")
        else:
            shutil.rmtree(grpo_dir, ignore_errors=True)
            say(f"5/6 GRPO: {grpo_steps} steps of 16 problems x 8 samples")
        t = time.time()
        marks = {}
        run_learner([binaries["learner"], "--config=grpo.yaml",
                     f"--host={args.learner_host}", f"--port={args.learner_port}",
                     *(["--insecure_allow_remote"] if args.insecure_allow_remote else []),
                     *args.learner_arg,
                     f"--metrics_port={learner_metrics}",
                     f"--ready_file={logs}/learner.ready",
                     *(["--resume"] if resume_grpo else []),
                     f"--set=run.seed={args.seed};run.max_steps={grpo_steps};"
                     f"lora.init={sft_adapter};eval.every={eval_every};"
                     f"eval.problems={eval_problems};"
                     f"{grpo_rollout};reward.address={reward_address}"],
                    out, os.path.join(logs, "grpo.log"),
                    lambda line: "validation" in line or re.match(r"step (1|\d*[05])/", line),
                    marks, append=resume_grpo)
        summary["grpo_seconds"] = round(time.time() - t, 1)
        services.check_alive()

        adapter = os.path.join(out, "runs", "grpo", "adapter")
        say(f"6/6 held-out accuracy of the GRPO adapter ({eval_problems} problems)")
        after = evaluate(adapter, "after", args.eval_samples, 1.0)
        after_greedy = evaluate(adapter, "after_greedy", 1, 0.0)

        steps = [m for m in read_jsonl(os.path.join(out, "runs", "grpo", "metrics.jsonl"))
                 if "reward_mean" in m]
        window = max(len(steps) // 5, 1)
        summary.update({
            "before": {"pass@1": before["pass@1"], "greedy_pass@1": before_greedy["pass@1"],
                       "mean_length": before["mean_length"],
                       "mean_reward": before["mean_reward"]},
            "after": {"pass@1": after["pass@1"], "greedy_pass@1": after_greedy["pass@1"],
                      "mean_length": after["mean_length"],
                      "mean_reward": after["mean_reward"]},
            "eval_problems": eval_problems, "eval_samples": args.eval_samples,
            "reward_first_steps": mean([m["reward_mean"] for m in steps[:window]]),
            "reward_last_steps": mean([m["reward_mean"] for m in steps[-window:]]),
            "reward_window": window,
            "adapter": adapter,
        })
        if args.check_dashboard:
            # Queried as of the last GRPO step: once the learner has exited, its
            # series are stale.
            checked = subprocess.run([sys.executable,
                                      os.path.join(REPO, "deploy", "check_dashboard.py"),
                                      "--prometheus", prometheus_url,
                                      "--time", f"{marks['last_step']:.3f}"])
            summary["dashboard_checked"] = checked.returncode == 0
    finally:
        services.stop()
    summary["wall_seconds"] = round(time.time() - started, 1)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)

    b, a = summary["before"], summary["after"]
    print()
    print(f"Held-out problems: {eval_problems} two-digit additions never seen in training")
    sampled = f"sampled pass@1 (T=1, n={args.eval_samples})"
    rows = [("adapter", sampled, "greedy pass@1", "mean length")]
    for label, row in (("before GRPO (warm-up only)", b), ("after GRPO", a)):
        rows.append((label, f"{100 * row['pass@1']:.1f}%",
                     f"{100 * row['greedy_pass@1']:.1f}%", f"{row['mean_length']:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) if j == 0 else c.rjust(w)
                                for j, (c, w) in enumerate(zip(r, widths))) + " |")
        if i == 0:
            print("| " + " | ".join("-" * w for w in widths) + " |")
    print()
    print(f"Training reward: {summary['reward_first_steps']:.3f} (first {window} steps) -> "
          f"{summary['reward_last_steps']:.3f} (last {window} steps)")
    print(f"Adapter (PEFT format): {adapter}")
    print(f"Metrics: {out}/runs/grpo/metrics.jsonl; summary: {out}/summary.json; "
          f"wall time {summary['wall_seconds']:.0f} s")
    # The figures and tables of the run (learner report), as the last word.
    report = subprocess.run([binaries["learner"], "report", os.path.join(out, "runs", "grpo")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if report.returncode != 0:
        raise DemoError(f"learner report failed: {report.stdout[-2000:]}")
    print(f"Report: {os.path.join(out, 'runs', 'grpo', 'report', 'index.html')}")
    if summary.get("dashboard_checked") is False:
        raise DemoError("dashboards/microrl.json has queries without data (above)")


def read_jsonl_array(path):
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        main()
    except DemoStopped:
        print("[demo] stopped (SIGTERM); the learner saved its last completed step",
              flush=True)
        sys.exit(0)
    except DemoError as error:
        print(f"[demo] error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
