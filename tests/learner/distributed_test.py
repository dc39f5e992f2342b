"""Data-parallel learner ranks (Mode A of docs/scaling.md) on this machine: real
rollout_server, reward_service and learner processes on loopback, the demo's tiny model,
Gloo collectives.

Checked:
  - 2 ranks launched by deploy/launch_ranks.sh (torchrun, a rollout server per rank) end
    with the adapter of 1 learner alone with the same global batch (max abs diff <=
    1e-6), the same problems, rewards and accuracy in metrics.jsonl, one line per step;
  - every rank serves /metrics with its rank label; rank 0 alone writes the run;
  - (both runs colocated, the presets' mode: each rollout server sleeps during the update)
  - SIGKILL of one rank of a job launched without torchrun (plain RANK/WORLD_SIZE/...):
    the other exits non-zero at once, saying a rank failed; SIGSTOP of one: the other
    fails once distributed.timeout_s (10 s) has passed;
  - one learner with two rollout servers (rollout.addresses): balanced groups, the
    adapter on both, the samples of one server; a SIGKILLed server's groups re-dispatched;
  - 2 ranks sharing those two servers (rank 0 publishing for both): the one learner's
    samples and adapter (within 1e-6), every group counted; one server restarted mid-run
    refuses, the ranks agree, rank 0 publishes again and the run goes on; SIGTERM to
    rank 1 stops both cleanly with the last step saved;
  - bounded staleness (rollout.max_staleness: 1): with a checkpoint every step (every
    step's lag is then 0) the run is bit-identical to the synchronous path; with two
    servers and a checkpoint every 3 steps, each step's rollouts come from the adapter its
    lag names (staleness [0, 1, 1, 0, 1, 1], never above 1), TIS weights are logged, both
    servers hold the two newest versions resident (GetInfo); (without TIS, whose weights
    read low-order bits of the rollout's log-probs) a run stopped at its step-3
    checkpoint and resumed ends with the uninterrupted run's adapter, bit for bit; 2 ranks
    with staleness 1 train what one learner does over 3 steps (the same samples and lags,
    the adapter within 1e-6). The bit-for-bit comparisons use one rollout server, whose
    batches do not depend on timing;
  - torchrun --max-restarts=1: a rank SIGKILLed mid-run is restarted with the others,
    the job resumes from its checkpoint and logs every step exactly once;
  - a rendezvous nobody hosts fails with a message naming its address.

  distributed_test.py --rollout_server BIN --learner BIN
                      --source_dir REPO [--keep]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402
from fault_test import Service, checkpoint_steps, config, steps_logged  # noqa: E402
from service_process import (consecutive_ports, free_port, generate_stubs,  # noqa: E402
                             make_demo, remove_work)

TIMEOUT_S = 30  # distributed.timeout_s of these runs

# The demo's learning rate and one optimizer step per step (its settings; the unit test
# data_parallel_update_test covers mini-batches that cross the ranks' shares). AdamW turns
# a gradient entry near zero into a step of up to lr, so rounding differences in such an
# entry (the ranks sum their gradients in another order) move the weights by up to ~lr /
# 100: the 1e-6 bound holds at the demo's lr, not at 10x it.
EXTRA = f"""grpo:
  mini_batches: 1
  kl_coef: 0.02
distributed:
  timeout_s: {TIMEOUT_S}
"""


# A reward the demo's untrained model earns about half the time (the parity of its
# completion's length), so that advantages, and the gradients, are not zero. It is
# served by the Python example reward service with its scoring replaced.
REWARD_SERVER = """import sys
sys.path.insert(0, {examples!r})
import python_reward_server as server


def score_item(item, format_weight):
    odd = len(item.completion) % 2
    return float(odd), {{"odd": float(odd), "long": float(len(item.completion) > 40)}}, \\
        bool(odd), "", ""


server.score_item = score_item
sys.argv = [a for a in sys.argv if not a.startswith("--metrics_port")]
server.main()
"""


def torchrun(nproc, extra_args=()):
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--no-python", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
            "--monitor_interval=0.5", *extra_args]


def edit(path, replacements):
    """Replaces the first occurrence of each (old, new) in the file at `path`."""
    with open(path) as f:
        text = f.read()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    with open(path, "w") as f:
        f.write(text)


def wait_exit(proc, log_path, timeout=300):
    """Waits for proc (killing it after `timeout`); its exit code (None if killed) and
    its log."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    return code, open(log_path).read()


def run(argv, work, name, env=None, timeout=300):
    """Runs argv to the end; (exit code or None on timeout, output, seconds)."""
    log_path = os.path.join(work, f"{name}.log")
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                env=env or dict(os.environ))
        code, out = wait_exit(proc, log_path, timeout)
    return code, out, time.time() - start


def lines(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if '"reward_mean"' in line]


def adapter(run_dir):
    return load_file(os.path.join(run_dir, "adapter", "adapter_model.safetensors"))


def max_difference(a, b):
    if sorted(a) != sorted(b):
        return float("inf")
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
               for k in a)


def pid_of_rank(ready_file, rank, timeout=60):
    path = f"{ready_file}.rank{rank}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path) as f:
                ready = json.load(f)
            return ready["pid"], ready["metrics_port"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.05)
    return None, None


def equivalence(args, work, servers, reward):
    """1 learner alone vs 2 torchrun ranks, same global batch."""
    # Colocated, the presets' mode: each rollout server sleeps during its rank's update.
    ref_cfg = config(work, "alone", servers[0], reward, 3, EXTRA)
    edit(ref_cfg, [("lr: 1.0e-3", "lr: 2.0e-4"), ("rollout:\n", "rollout:\n  colocated: true\n")])
    code, out, _ = run([args.learner, "--port=0", "--metrics_port=0", f"--config={ref_cfg}"],
                       work, "alone")
    check(code == 0, f"the lone learner trains 3 steps (exit {code})" +
          ("" if code == 0 else out[-2000:]))
    dp_cfg = config(work, "ranks", servers[0], reward, 3, EXTRA)
    edit(dp_cfg, [("lr: 1.0e-3", "lr: 2.0e-4"), ("rollout:\n", "rollout:\n  colocated: true\n")])
    # deploy/launch_ranks.sh starts a rollout server per rank, then torchrun.
    ready = os.path.join(work, "ranks.ready")
    proc_log = open(os.path.join(work, "ranks.log"), "w")
    build_dir = os.path.dirname(os.path.dirname(os.path.abspath(args.learner)))
    env = dict(os.environ, MASTER_PORT=str(free_port()))
    proc = subprocess.Popen(
        ["bash", os.path.join(args.source_dir, "deploy", "launch_ranks.sh"), "--nproc=2",
         f"--model={work}/demo/model", f"--config={dp_cfg}", f"--build_dir={build_dir}",
         f"--rollout_port={consecutive_ports(2)}", f"--reward_address={reward.address}",
         "--rollout_flag=--max_model_len=128", "--rollout_flag=--kv_cache_mb=32",
         f"--log_dir={work}/ranks_servers", "--",
         "--port=0", "--metrics_port=0", f"--ready_file={ready}"],
        stdout=proc_log, stderr=subprocess.STDOUT, env=env)
    # Each rank serves /metrics with its rank label while it trains.
    labels = {}
    for rank in (0, 1):
        _, port = pid_of_rank(ready, rank)
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                          timeout=5).read().decode()
            labels[rank] = f'rank="{rank}"' in text and "microrl_process_cpu_seconds_total" in text
        except (OSError, TypeError):
            labels[rank] = False
    code, out = wait_exit(proc, proc_log.name)
    check(code == 0, f"launch_ranks.sh --nproc=2 (torchrun) trains 3 steps (exit {code})" +
          ("" if code == 0 else out[-3000:]))
    check(labels == {0: True, 1: True}, f"each rank's /metrics carries its rank label: {labels}")
    check("rank 1 of 2 joined" in out and "(gloo)" in out, "the ranks joined over Gloo")
    alone, ranks = os.path.join(work, "runs", "alone"), os.path.join(work, "runs", "ranks")
    if code != 0:
        return None
    a, b = lines(alone), lines(ranks)
    check([m["step"] for m in b] == [1, 2, 3], f"one line per step: {[m['step'] for m in b]}")
    check([m["problems"] for m in a] == [m["problems"] for m in b], "the same problems")
    check(all(0 < m["reward_mean"] < 1 for m in a) and all(m["grad_norm"] > 0 for m in a),
          "rewards vary and the gradients are not zero: " +
          str([(m["reward_mean"], m["grad_norm"]) for m in a]))
    for key in ("reward_mean", "accuracy", "reward/odd", "reward/long",
                "response_length_mean", "trained_completions", "zero_variance_fraction"):
        check([m[key] for m in a] == [m[key] for m in b],
              f"the same {key}: {[m[key] for m in a]} vs {[m[key] for m in b]}")
    for key in ("loss", "grad_norm", "entropy"):
        diff = max(abs(x[key] - y[key]) for x, y in zip(a, b))
        check(diff <= 1e-5, f"{key} within 1e-5 ({diff:.2e})")
    diff = max_difference(adapter(alone), adapter(ranks))
    check(diff <= 1e-6, f"2 ranks' adapter equals the lone learner's: max abs diff {diff:.2e}")
    check(all(m.get("ranks") == 2 for m in b), "the lines say 2 ranks")
    check(sorted(os.listdir(ranks)).count("adapter") == 1 and
          os.path.exists(os.path.join(ranks, "checkpoints", "step_00000002")),
          "rank 0 wrote the adapter and the checkpoint")
    return a


def env_rank(rank, world, port, local_rank=None):
    env = dict(os.environ)
    env.update({"RANK": str(rank), "LOCAL_RANK": str(rank if local_rank is None else local_rank),
                "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port)})
    return env


def start_ranks(args, work, name, cfg, world=2):
    """`world` learner ranks of config `cfg` from plain environment variables (no
    torchrun), logging to <work>/<name>.<rank>.log; (processes, log paths)."""
    port = free_port()
    logs = [os.path.join(work, f"{name}.{r}.log") for r in range(world)]
    procs = [subprocess.Popen([args.learner, "--port=0", "--metrics_port=0", f"--config={cfg}"],
                              stdout=open(logs[r], "w"), stderr=subprocess.STDOUT,
                              env=env_rank(r, world, port)) for r in range(world)]
    return procs, logs


def wait_steps(run_dir, count, timeout=120):
    """Waits until the run has logged `count` steps; whether it has."""
    deadline = time.time() + timeout
    while len(steps_logged(run_dir)) < count and time.time() < deadline:
        time.sleep(0.05)
    return len(steps_logged(run_dir)) >= count


def signalled_rank(args, work, cfg, name, signum, after_steps):
    """Two ranks from plain environment variables; once `after_steps` are logged, rank 1
    gets `signum`. Returns rank 0's exit code (None if it ran on for 90 s), the seconds it
    took to exit after the signal, its output and the run directory."""
    procs, logs = start_ranks(args, work, name, cfg)
    run_dir = os.path.join(work, "runs", name)
    check(wait_steps(run_dir, after_steps), f"{name}: the plain-environment job trains")
    procs[1].send_signal(signum)
    signalled = time.time()
    try:
        code = procs[0].wait(timeout=90)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        code = None
    took = time.time() - signalled
    procs[1].kill()
    procs[1].wait()
    return code, took, open(logs[0]).read(), run_dir


def failure_line(out):
    return next((line for line in out.splitlines() if "training failed" in line), "")[-300:]


def dead_rank(args, work, servers, reward):
    """SIGKILL of rank 1 (no torchrun): rank 0 fails at once."""
    cfg = config(work, "dead", servers[0], reward, 1000, EXTRA)
    code, took, out, run_dir = signalled_rank(args, work, cfg, "dead", signal.SIGKILL, 2)
    check(code not in (0, None), f"rank 0 exits non-zero when rank 1 dies (exit {code})")
    check(took <= TIMEOUT_S + 30, f"within the collective timeout ({took:.1f} s)")
    check("failed on rank 0 of 2" in out, "and says a rank failed: " + failure_line(out))
    logged = steps_logged(run_dir)
    check(logged == list(range(1, len(logged) + 1)), f"each step logged once: {logged}")


def hung_rank(args, work, servers, reward):
    """SIGSTOP of rank 1: rank 0 fails once distributed.timeout_s has passed."""
    cfg = config(work, "hung", servers[0], reward, 1000,
                 EXTRA.replace(f"timeout_s: {TIMEOUT_S}", "timeout_s: 10"))
    code, took, out, _ = signalled_rank(args, work, cfg, "hung", signal.SIGSTOP, 1)
    check(code not in (0, None) and 8 <= took <= 60,
          f"a hung rank fails its peer after the 10 s collective timeout (exit {code}, "
          f"{took:.1f} s): " + failure_line(out))


def restarted_rank(args, work, servers, reward):
    """torchrun --max-restarts=1: a killed rank restarts the job, which resumes."""
    cfg = config(work, "elastic", servers[0], reward, 6, EXTRA)
    ready = os.path.join(work, "elastic.ready")
    log = open(os.path.join(work, "elastic.log"), "w")
    proc = subprocess.Popen(torchrun(2, ["--max-restarts=1"]) +
                            [args.learner, "--port=0", "--metrics_port=0", "--resume",
                             f"--ready_file={ready}", f"--config={cfg}"],
                            stdout=log, stderr=subprocess.STDOUT)
    run_dir = os.path.join(work, "runs", "elastic")
    trains = wait_steps(run_dir, 3)
    pid, _ = pid_of_rank(ready, 1)
    check(trains and pid is not None, "the torchrun job trains")
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    code, out = wait_exit(proc, log.name)
    check(code == 0, f"the job restarts and finishes (exit {code})" +
          ("" if code == 0 else out[-3000:]))
    check("resuming" in out, "the restarted ranks resume from the checkpoint")
    logged = steps_logged(run_dir)
    check(logged == [1, 2, 3, 4, 5, 6], f"every step logged exactly once: {logged}")


def several_servers(args, work, servers, reward, alone_lines):
    """One learner, two rollout servers (rollout.addresses): groups spread evenly, the
    adapter loaded into both, the batch sampled as one server samples it; a server
    SIGKILLed mid-run loses its groups to the other. The first run names its first server
    by DNS (dns:localhost:port)."""
    addresses = f"[{servers[0].address}, {servers[1].address}]"
    cfg = config(work, "pool", servers[0], reward, 3, EXTRA)
    edit(cfg, [("lr: 1.0e-3", "lr: 2.0e-4"),
               ("rollout:\n", f"rollout:\n  addresses: [\"dns:localhost:{servers[0].port}\", "
                             f"{servers[1].address}]\n")])
    code, out, _ = run([args.learner, "--port=0", "--metrics_port=0", f"--config={cfg}"],
                       work, "pool")
    check(code == 0, f"a learner with two rollout servers trains (exit {code})" +
          ("" if code == 0 else out[-2000:]))
    if code != 0:
        return
    check(f"dns:localhost:{servers[0].port} resolves to 127.0.0.1:{servers[0].port}" in out,
          "the dns: entry was resolved to the first server")
    pool = lines(os.path.join(work, "runs", "pool"))
    check([m.get("rollout_groups_per_server") for m in pool] == [[2, 2]] * 3,
          f"dispatch is balanced: {[m.get('rollout_groups_per_server') for m in pool]}")
    versions = [s.metric("microrl_rollout_adapter_version") for s in servers]
    check(versions[0] == versions[1] == pool[-1]["adapter_version"],
          f"every adapter reached both servers: {versions} vs {pool[-1]['adapter_version']}")
    if alone_lines:
        check([m["reward_mean"] for m in pool] == [m["reward_mean"] for m in alone_lines] and
              [m["response_length_mean"] for m in pool] ==
              [m["response_length_mean"] for m in alone_lines],
              "two servers sample what one does (rewards and lengths as the lone run's)")
    # SIGKILL of the second server mid-run.
    cfg = config(work, "pool_kill", servers[0], reward, 6, EXTRA)
    edit(cfg, [("rollout:\n", f"rollout:\n  addresses: {addresses}\n"
                               "  redispatch_after_s: 2\n")])
    log = open(os.path.join(work, "pool_kill.log"), "w")
    proc = subprocess.Popen([args.learner, "--port=0", "--metrics_port=0", f"--config={cfg}"],
                            stdout=log, stderr=subprocess.STDOUT)
    run_dir = os.path.join(work, "runs", "pool_kill")
    wait_steps(run_dir, 2)
    servers[1].kill()
    code, out = wait_exit(proc, log.name)
    check(code == 0, f"the run goes on without the killed server (exit {code})" +
          ("" if code == 0 else out[-2000:]))
    after = lines(run_dir)
    check(steps_logged(run_dir) == [1, 2, 3, 4, 5, 6],
          f"every step logged exactly once: {steps_logged(run_dir)}")
    check(any(m.get("rollout_redispatched", 0) > 0 for m in after) and
          after[-1].get("rollout_groups_per_server") == [4, 0],
          "the killed server's groups went to the other: " +
          str([(m.get("rollout_groups_per_server"), m.get("rollout_redispatched"))
               for m in after]))
    servers[1].start()


def ranks_sharing_servers(args, work, servers, reward):
    """Mode A and B together: 2 ranks sharing the two servers of rollout.addresses; rank 0
    publishes for both. The same run as one learner with the two servers (`pool`, run by
    several_servers). The first run through deploy/launch_ranks.sh --rollout_addresses
    (torchrun), the others from plain environment variables."""
    addresses = f"[{servers[0].address}, {servers[1].address}]"
    cfg = config(work, "ranks_pool", servers[0], reward, 3, EXTRA)
    edit(cfg, [("lr: 1.0e-3", "lr: 2.0e-4")])
    build_dir = os.path.dirname(os.path.dirname(os.path.abspath(args.learner)))
    log = os.path.join(work, "ranks_pool.log")
    proc = subprocess.Popen(
        ["bash", os.path.join(args.source_dir, "deploy", "launch_ranks.sh"), "--nproc=2",
         f"--config={cfg}", f"--build_dir={build_dir}", f"--reward_address={reward.address}",
         f"--rollout_addresses={servers[0].address},{servers[1].address}",
         f"--log_dir={work}/ranks_pool_servers", "--", "--port=0", "--metrics_port=0"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT,
        env=dict(os.environ, MASTER_PORT=str(free_port())))
    code, out = wait_exit(proc, log)
    check(code == 0, f"launch_ranks.sh --rollout_addresses: 2 ranks sharing two rollout "
          f"servers train (exit {code})" + ("" if code == 0 else out[-2000:]))
    pool_dir = os.path.join(work, "runs", "pool")
    if code != 0 or not os.path.isdir(pool_dir):
        return
    run_dir = os.path.join(work, "runs", "ranks_pool")
    got, alone = lines(run_dir), lines(pool_dir)
    check(steps_logged(run_dir) == [1, 2, 3], f"one line per step: {steps_logged(run_dir)}")
    check([m.get("rollout_groups_per_server") for m in got] == [[2, 2]] * 3,
          "both ranks' groups, spread evenly: " +
          str([m.get("rollout_groups_per_server") for m in got]))
    check([(m["problems"], m["reward_mean"], m["response_length_mean"]) for m in got] ==
          [(m["problems"], m["reward_mean"], m["response_length_mean"]) for m in alone],
          "the ranks sample what one learner with the two servers samples")
    diff = max_difference(adapter(run_dir), adapter(pool_dir))
    check(diff <= 1e-6, f"and end with its adapter: max abs diff {diff:.2e}")
    versions = [s.metric("microrl_rollout_adapter_version") for s in servers]
    check(versions[0] == versions[1] == got[-1]["adapter_version"],
          f"rank 0 published every version to both servers: {versions} vs "
          f"{got[-1]['adapter_version']}")
    check("rank 1 of 2 joined" in out and "rollout servers " + servers[0].address in out,
          "the two ranks joined, on the shared servers")

    # A server restarted mid-run (it has no adapter, and refuses): the ranks agree, rank 0
    # loads the adapter again into both, and every rank repeats its requests. The
    # restarted server misses its first publish (failpoint): left to timing, the first
    # call it answers can be a publish, which brings it up to date without a refusal.
    cfg = config(work, "ranks_pool_restart", servers[0], reward, 12, EXTRA)
    edit(cfg, [("rollout:\n", f"rollout:\n  addresses: {addresses}\n"
                             "  redispatch_after_s: 5\n")])
    procs, logs = start_ranks(args, work, "ranks_pool_restart", cfg)
    run_dir = os.path.join(work, "runs", "ranks_pool_restart")
    wait_steps(run_dir, 2)
    servers[1].kill()
    env = servers[1].env
    servers[1].env = dict(env, MICRORL_FAILPOINTS="rollout.load_adapter=error@1")
    servers[1].start()
    servers[1].env = env
    codes = [wait_exit(p, log)[0] for p, log in zip(procs, logs)]
    out = open(logs[0]).read()
    check(codes == [0, 0] and steps_logged(run_dir) == list(range(1, 13)),
          f"a server restarted under 2 ranks: the run goes on (exits {codes}, steps "
          f"{steps_logged(run_dir)})" + ("" if codes == [0, 0] else out[-2000:]))
    check("publishing the current adapter again" in out,
          "rank 0 loaded the adapter again after the restart")
    versions = [s.metric("microrl_rollout_adapter_version") for s in servers]
    last = lines(run_dir)[-1]["adapter_version"] if codes == [0, 0] else None
    check(versions[0] == versions[1] == last,
          f"both servers serve the last version: {versions} vs {last}")

    # SIGTERM to rank 1: both ranks stop together, cleanly, with the last step saved.
    cfg = config(work, "ranks_pool_stop", servers[0], reward, 200, EXTRA)
    edit(cfg, [("rollout:\n", f"rollout:\n  addresses: {addresses}\n")])
    procs, logs = start_ranks(args, work, "ranks_pool_stop", cfg)
    run_dir = os.path.join(work, "runs", "ranks_pool_stop")
    wait_steps(run_dir, 3)
    procs[1].send_signal(signal.SIGTERM)
    codes = [wait_exit(p, log)[0] for p, log in zip(procs, logs)]
    steps = steps_logged(run_dir)
    saved = checkpoint_steps(run_dir)
    check(codes == [0, 0] and steps == list(range(1, len(steps) + 1)) and
          len(steps) < 200 and saved and saved[-1] == len(steps),
          f"SIGTERM to rank 1 stops both cleanly (exits {codes}, steps 1..{len(steps)}, "
          f"checkpoints {saved})" + ("" if codes == [0, 0] else "".join(
              f"\n--- rank {r}:\n" + "\n".join(
                  line for line in open(logs[r]).read().splitlines()
                  if not line.startswith(" "))[-2500:] for r in (0, 1))))


def bounded_staleness(args, work, servers, reward):
    """rollout.max_staleness: 1. The runs compared bit for bit use one rollout server
    (one request per step: its batches are the same in every run; groups spread over two
    servers arrive in an order that timing decides, and another batch composition can
    change low-order bits of the logits and, rarely, a sampled token); the run checked
    for its lags, versions and resident adapters uses two."""
    addresses = f"[{servers[0].address}, {servers[1].address}]"

    def staleness_config(name, steps, grpo="", pool=False):
        cfg = config(work, name, servers[0], reward, steps, EXTRA)
        edit(cfg, [("lr: 1.0e-3", "lr: 2.0e-4"),
                   ("rollout:\n", f"rollout:\n  addresses: {addresses}\n" if pool else
                    "rollout:\n"),
                   ("grpo:\n", "grpo:\n  old_logprobs: recompute\n" + grpo)])
        return cfg

    def train(name, cfg, extra_args=()):
        code, out, _ = run([args.learner, "--port=0", "--metrics_port=0", f"--config={cfg}",
                            *extra_args], work, name)
        check(code == 0, f"{name} trains (exit {code})" + ("" if code == 0 else out[-2000:]))
        return code == 0

    # Synchronous, then the pipeline with a checkpoint every step (so every lag is 0)
    # and no correction (every ratio would be 1 up to rounding): the same run.
    sync = staleness_config("sync", 4)
    lag0 = staleness_config("lag0", 4, "  tis_cap: 0\n")
    edit(lag0, [("checkpoint_every: 2", "checkpoint_every: 1"),
                ("rollout:\n", "rollout:\n  max_staleness: 1\n")])
    if train("sync", sync) and train("lag0", lag0):
        a, b = lines(os.path.join(work, "runs", "sync")), lines(os.path.join(work, "runs", "lag0"))
        check([m.get("staleness") for m in b] == [0] * 4,
              f"a checkpoint every step leaves no lag: {[m.get('staleness') for m in b]}")
        check([(m["problems"], m["reward_mean"], m["response_length_mean"]) for m in a] ==
              [(m["problems"], m["reward_mean"], m["response_length_mean"]) for m in b],
              "the pipeline at lag 0 samples the synchronous run's problems and completions")
        diff = max_difference(adapter(os.path.join(work, "runs", "sync")),
                              adapter(os.path.join(work, "runs", "lag0")))
        check(diff == 0, f"and ends with its adapter bit for bit (max abs diff {diff:.2e})")

    # Staleness 1 with a checkpoint every 3 steps.
    stale = staleness_config("stale", 6, pool=True)
    edit(stale, [("checkpoint_every: 2", "checkpoint_every: 3"),
                 ("rollout:\n", "rollout:\n  max_staleness: 1\n")])
    if not train("stale", stale):
        return
    run_dir = os.path.join(work, "runs", "stale")
    got = lines(run_dir)
    check(steps_logged(run_dir) == [1, 2, 3, 4, 5, 6], f"one line per step: {steps_logged(run_dir)}")
    staleness = [m.get("staleness") for m in got]
    check(staleness == [0, 1, 1, 0, 1, 1],
          f"staleness is 1 but after each checkpoint, never above: {staleness}")
    # The adapter of step s - 1 - staleness generated step s (step 0's: one below step 1's).
    published = {m["step"]: m["adapter_version"] for m in got}
    published[0] = got[0]["adapter_version"] - 1
    check(all(m["rollout_adapter_version"] == published[m["step"] - 1 - m["staleness"]]
              for m in got),
          "each step's rollouts came from the version its lag names: " +
          str([(m["step"], m["rollout_adapter_version"]) for m in got]))
    check(all("is_weight_mean" in m and "is_truncated_fraction" in m for m in got) and
          any(m["is_weight_mean"] != 1.0 for m in got if m["staleness"] == 1),
          "the TIS weights are logged, and differ from 1 on stale steps: " +
          str([round(m.get("is_weight_mean", -1), 4) for m in got]))
    stubs = os.path.join(work, "stubs")
    os.makedirs(stubs, exist_ok=True)
    generate_stubs(args.source_dir, stubs)
    import grpc
    from proto import common_pb2, rollout_pb2_grpc
    resident = []
    for server in servers:
        with grpc.insecure_channel(server.address) as channel:
            info = rollout_pb2_grpc.RolloutStub(channel).GetInfo(common_pb2.GetInfoRequest(),
                                                                timeout=10)
            resident.append(list(info.resident_adapter_versions))
    newest = got[-1]["adapter_version"]
    check(resident == [[newest - 1, newest]] * 2,
          f"both servers hold the two newest versions resident: {resident}")

    # Stopped at the step-3 checkpoint, resumed to step 6: the uninterrupted run. Without
    # TIS: its weights read the rollout's log-probs, whose low-order bits depend on which
    # groups a server happened to batch together (timing), so two runs with it differ by
    # ~1e-6 whether resumed or not.
    def exact_config(name, steps):
        cfg = staleness_config(name, steps, "  tis_cap: 0\n")
        edit(cfg, [("checkpoint_every: 2", "checkpoint_every: 3"),
                   ("rollout:\n", "rollout:\n  max_staleness: 1\n")])
        return cfg

    whole = exact_config("stale_whole", 6)
    part = exact_config("stale_resume", 3)
    if train("stale_whole", whole) and train("stale_part", part):
        edit(part, [("max_steps: 3", "max_steps: 6")])
        if train("stale_resumed", part, ["--resume"]):
            whole_dir = os.path.join(work, "runs", "stale_whole")
            resumed_dir = os.path.join(work, "runs", "stale_resume")
            resumed = lines(resumed_dir)
            check(steps_logged(resumed_dir) == [1, 2, 3, 4, 5, 6],
                  f"the resumed run logs every step once: {steps_logged(resumed_dir)}")
            check([(m["problems"], m["reward_mean"], m["staleness"]) for m in resumed] ==
                  [(m["problems"], m["reward_mean"], m["staleness"])
                   for m in lines(whole_dir)],
                  "the resumed run samples the uninterrupted one's problems and completions")
            diff = max_difference(adapter(whole_dir), adapter(resumed_dir))
            check(diff == 0, f"and ends with its adapter bit for bit (max abs diff {diff:.2e})")

    # 2 data-parallel ranks, each with its own server (Mode A), staleness 1: the one
    # learner's first 3 steps (lags 0, 1, 1). Not further: the ranks sum gradients in
    # another order, so their adapter differs in the last bits, and a few steps on that is
    # enough for a sampled token to flip.
    ranks_cfg = exact_config("stale_ranks", 3)
    procs, logs = start_ranks(args, work, "stale_ranks", ranks_cfg)
    codes = [wait_exit(p, log)[0] for p, log in zip(procs, logs)]
    check(codes == [0, 0], f"2 ranks with staleness 1 train (exits {codes})" +
          ("" if codes == [0, 0] else open(logs[0]).read()[-2000:]))
    whole_dir = os.path.join(work, "runs", "stale_whole")
    ranks_dir = os.path.join(work, "runs", "stale_ranks")
    if codes == [0, 0] and os.path.isdir(whole_dir):
        key = [(m["problems"], m["reward_mean"], m["staleness"],
                m.get("rollout_groups_per_server")) for m in lines(ranks_dir)]
        check(key == [(m["problems"], m["reward_mean"], m["staleness"],
                       m.get("rollout_groups_per_server")) for m in lines(whole_dir)[:3]],
              "2 ranks with staleness 1 sample what one learner does, with its lags: " +
              str([k[2] for k in key]))
        at_3 = load_file(os.path.join(whole_dir, "checkpoints", "step_00000003", "adapter",
                                      "adapter_model.safetensors"))
        diff = max_difference(at_3, adapter(ranks_dir))
        check(diff <= 1e-6, f"and end with its step-3 adapter: max abs diff {diff:.2e}")


def bad_rendezvous(args, work, servers, reward):
    cfg = config(work, "lonely", servers[0], reward, 2,
                 EXTRA.replace(f"timeout_s: {TIMEOUT_S}", "timeout_s: 3"))
    port = free_port()
    code, out, took = run([args.learner, "--port=0", "--metrics_port=0", f"--config={cfg}"],
                          work, "lonely", env=env_rank(1, 2, port), timeout=120)
    check(code not in (0, None) and f"rendezvous at 127.0.0.1:{port}" in out,
          f"a rendezvous nobody hosts fails naming it (exit {code}, {took:.1f} s): " +
          out.strip().splitlines()[-1][-300:] if out.strip() else "")
    shared = config(work, "shared", servers[0], reward, 2, EXTRA)
    edit(shared, [("rollout:\n", f"rollout:\n  addresses: [\"dns:localhost:{servers[0].port}\"]"
                                  "\n  colocated: true\n")])
    code, out, _ = run([args.learner, "--port=0", "--metrics_port=0", f"--config={shared}"],
                       work, "shared", env=env_rank(0, 2, free_port()), timeout=60)
    check(code not in (0, None) and "ranks that share rollout servers cannot each put them "
          "to sleep" in out, f"ranks sharing rollout.addresses refuse colocation (exit {code})")
    bad = env_rank(0, 2, port)
    bad["RANK"] = "2"
    code, out, _ = run([args.learner, "--port=0", "--metrics_port=0", f"--config={cfg}"],
                       work, "badrank", env=bad, timeout=60)
    check(code not in (0, None) and "RANK=2 is not below WORLD_SIZE=2" in out,
          f"a bad RANK is refused naming it (exit {code})")


def main():
    parser = argparse.ArgumentParser()
    for name in ("rollout_server", "learner", "source_dir"):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="microrl_distributed_")
    make_demo(args.source_dir, os.path.join(work, "demo"), seed=1)
    base = consecutive_ports(2)
    servers = []
    for r in (0, 1):
        s = Service([args.rollout_server, f"--model={work}/demo/model", "--max_model_len=128",
                     "--kv_cache_mb=32"], f"rollout_server{r}", work)
        s.port = base + r
        servers.append(s)
    script = os.path.join(work, "parity_reward.py")
    with open(script, "w") as f:
        f.write(REWARD_SERVER.format(
            examples=os.path.join(args.source_dir, "reward_service", "examples")))
    reward = Service([sys.executable, script], "parity_reward", work)
    try:
        for s in servers + [reward]:
            s.start()
        alone_lines = equivalence(args, work, servers, reward)
        several_servers(args, work, servers, reward, alone_lines)
        ranks_sharing_servers(args, work, servers, reward)
        bounded_staleness(args, work, servers, reward)
        dead_rank(args, work, servers, reward)
        hung_rank(args, work, servers, reward)
        restarted_rank(args, work, servers, reward)
        bad_rendezvous(args, work, servers, reward)
    finally:
        for s in servers + [reward]:
            s.stop()
        remove_work(work, args.keep)
    finish()


if __name__ == "__main__":
    main()
