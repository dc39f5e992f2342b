"""Scaling out on this machine (docs/scaling.md), with the demo's tiny model:

  (A) Mode A, data-parallel ranks: median seconds per GRPO step and generated tokens/s of
      1 rank vs 2 ranks (each with its own rollout server, deploy/launch_ranks.sh) on the
      same global batch; prints the ratio.
  (B) Mode B: one learner with 1 rollout server vs 2 (rollout.addresses), synchronous,
      same steps; prints the ratio. Then, with the 2 servers and old log-probs recomputed,
      synchronous against rollout.max_staleness 1 (the next step generated during the
      update); prints the ratio and how long each step waited for its rollouts. Then the
      same with 1 server and the learner on one thread each (OMP_NUM_THREADS=1), so that
      generation and update do not compete for this machine's cores.
  (C) The all-reduce of a LoRA adapter's gradients at Qwen2.5-1.5B's shapes, rank 64 and
      rank 256, between 2 ranks (Gloo on loopback): microrl's Communicator
      (allreduce_bench) against PyTorch's own torch.distributed.all_reduce from Python on
      the same tensors, bucketed alike; prints the ratio.

  python tests/bench/scale_bench.py --build_dir build --source_dir . [--steps 5]
        [--parts A,C] [--ranks_for_c 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_process import consecutive_ports, free_port, make_demo, start  # noqa: E402

# PyTorch's side of (C): the same tensors as allreduce_bench (one per A and B matrix),
# flattened into buckets of the same size and all-reduced with torch.distributed (gloo).
PEER = r"""
import json, os, sys, time
import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
rank_lora, iters, bucket = int(sys.argv[1]), int(sys.argv[2]), 64 << 20
dist.init_process_group("gloo")
h, m, kv, layers = 1536, 8960, 256, 28
modules = [(h, h), (h, kv), (h, kv), (h, h), (h, m), (h, m), (m, h)]
grads = []
for _ in range(layers):
    for i, o in modules:
        grads += [torch.ones(rank_lora, i), torch.ones(o, rank_lora)]
buckets, cur, size = [], [], 0
for g in grads:
    b = g.numel() * 4
    if cur and size + b > bucket:
        buckets.append(cur); cur, size = [], 0
    cur.append(g); size += b
buckets.append(cur)
times = []
for it in range(iters + 1):
    for g in grads:
        g.fill_(1)
    start = time.perf_counter()
    works, flats = [], []
    for b in buckets:
        flat = b[0] if len(b) == 1 else _flatten_dense_tensors(b)
        flats.append(flat)
        works.append(dist.all_reduce(flat, async_op=True))
    for b, flat, w in zip(buckets, flats, works):
        w.wait()
        if len(b) > 1:
            for g, v in zip(b, _unflatten_dense_tensors(flat, b)):
                g.copy_(v)
    if it > 0:
        times.append(time.perf_counter() - start)
assert all(bool((g == dist.get_world_size()).all()) for g in grads)
if dist.get_rank() == 0:
    times.sort()
    print(json.dumps({"seconds": times[len(times) // 2]}))
dist.destroy_process_group()
"""


def torchrun(nproc):
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}"]


def last_json(text):
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no result in:\n{text[-2000:]}")


def run_config(work, demo, name, steps, rollout_lines="", extra=""):
    config = os.path.join(work, f"{name}.yaml")
    with open(config, "w") as f:
        f.write(f"""run:
  name: {name}
  output_dir: {work}/runs
  seed: 0
  max_steps: {steps}
  checkpoint_every: 1000
model:
  path: {demo}/model
  gradient_checkpointing: false
lora:
  rank: 64
  alpha: 64
data:
  train: {demo}/data/train.jsonl
  instruction: "{{problem}}"
rollout:
{rollout_lines}  prompts_per_step: 16
  group_size: 8
  max_response_tokens: 48
  top_p: 0.9
optim:
  lr: 2.0e-4
{extra}""")
    return config


def run_lines(work, name):
    """A run's step lines after the first."""
    with open(os.path.join(work, "runs", name, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f if '"reward_mean"' in x][1:]


def step_figures(work, name):
    """Median s/step and generated tokens/s of a run's steps after the first."""
    lines = run_lines(work, name)
    step = statistics.median(m["time/step"] for m in lines)
    tokens = statistics.median(m["response_length_mean"] * 16 * 8 / m["time/step"]
                               for m in lines)
    return step, tokens


def mode_b(args, work):
    demo = os.path.join(work, "demo")
    if not os.path.isdir(demo):
        make_demo(args.source_dir, demo, seed=1)
    bin_dir = args.build_dir
    procs = []
    try:
        reward, ready = start(os.path.join(bin_dir, "reward_service", "reward_service"), work,
                              "b_reward")
        procs.append(reward)
        reward_port = ready["grpc_port"]
        ports = []
        for i in range(2):
            proc, ready = start(os.path.join(bin_dir, "rollout_server", "rollout_server"),
                                work, f"b_rollout{i}",
                                [f"--model={demo}/model", "--max_model_len=256"])
            procs.append(proc)
            ports.append(ready["grpc_port"])
        learner = os.path.join(bin_dir, "learner", "learner")

        def train(name, lines, extra="", env=None):
            config = run_config(work, demo, name, args.steps, lines, extra)
            proc = subprocess.run(
                [learner, "--port=0", "--metrics_port=0", f"--config={config}",
                 f"--set=reward.address=127.0.0.1:{reward_port}"],
                capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.exit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            return step_figures(work, name)

        results = {}
        both = (f"  address: 127.0.0.1:{ports[0]}\n"
                f"  addresses: [127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]}]\n")
        for count in (1, 2):
            results[count] = train(f"servers{count}", both if count == 2 else
                                   f"  address: 127.0.0.1:{ports[0]}\n")
            print(f"(B) 1 learner, {count} rollout server{'s' if count > 1 else ''}: "
                  f"{results[count][0]:.3f} s/step, {results[count][1]:.0f} generated "
                  f"tokens/s (median of steps 2..{args.steps})", flush=True)
        print(f"(B) speed-up of 2 servers over 1: {results[1][0] / results[2][0]:.2f}x "
              f"(all on this machine's {os.cpu_count()} cores)")
        recompute = "grpo:\n  old_logprobs: recompute\n"

        def sync_against_stale(label, lines, suffix, env=None):
            sync = train("sync" + suffix, lines, recompute, env)
            stale = train("stale1" + suffix, lines + "  max_staleness: 1\n", recompute, env)
            for name, run, figures in (("synchronous", "sync", sync),
                                       ("staleness 1", "stale1", stale)):
                wait = statistics.median(m.get("rollout_wait_seconds",
                                               m["time/generate"] + m["time/score"])
                                         for m in run_lines(work, run + suffix))
                print(f"(B) {label}, {name}: {figures[0]:.3f} s/step, {figures[1]:.0f} "
                      f"generated tokens/s, {wait:.3f} s/step waiting for rollouts (medians "
                      f"of steps 2..{args.steps})", flush=True)
            print(f"(B) {label}: speed-up of staleness 1 over synchronous: "
                  f"{sync[0] / stale[0]:.2f}x", flush=True)

        sync_against_stale("2 servers, old log-probs recomputed", both, "")
        # One core for the rollout server and one for the learner (OMP_NUM_THREADS=1),
        # as generation and training on devices of their own would be.
        one_thread = dict(os.environ, OMP_NUM_THREADS="1")
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            proc, ready = start(os.path.join(bin_dir, "rollout_server", "rollout_server"),
                                work, "b_rollout_one_thread",
                                [f"--model={demo}/model", "--max_model_len=256"])
        finally:
            if saved is None:
                del os.environ["OMP_NUM_THREADS"]
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        procs.append(proc)
        sync_against_stale("1 server and the learner on one thread each",
                           f"  address: 127.0.0.1:{ready['grpc_port']}\n", "_one_thread",
                           one_thread)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


def mode_a(args, work):
    demo = os.path.join(work, "demo")
    make_demo(args.source_dir, demo, seed=1)
    results = {}
    for nproc in (1, 2):
        name = f"ranks{nproc}"
        config = run_config(work, demo, name, args.steps)
        env = dict(os.environ, MASTER_PORT=str(free_port()))
        proc = subprocess.run(
            ["bash", os.path.join(args.source_dir, "deploy", "launch_ranks.sh"),
             f"--nproc={nproc}", f"--model={demo}/model", f"--config={config}",
             f"--build_dir={args.build_dir}", f"--rollout_port={consecutive_ports(nproc)}",
             "--rollout_flag=--max_model_len=256", f"--log_dir={work}/{name}_servers", "--",
             "--port=0", "--metrics_port=0"],
            capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        step, tokens = step_figures(work, name)
        results[nproc] = (step, tokens)
        print(f"(A) {nproc} rank{'s' if nproc > 1 else ''}: {step:.3f} s/step, "
              f"{tokens:.0f} generated tokens/s (median of steps 2..{args.steps}, "
              "16 prompts x 8, 48 tokens)", flush=True)
    print(f"(A) speed-up of 2 ranks over 1: {results[1][0] / results[2][0]:.2f}x "
          f"(this machine has {os.cpu_count()} cores for both ranks and both servers)")


def allreduce(args, work):
    bench = os.path.join(args.build_dir, "tests", "bench", "allreduce_bench")
    peer = os.path.join(work, "peer_allreduce.py")
    with open(peer, "w") as f:
        f.write(PEER)
    n = args.ranks_for_c
    for rank in (64, 256):
        ours = subprocess.run(torchrun(n) + ["--no-python", bench, f"--rank={rank}",
                                             f"--iters={args.iters}"],
                              capture_output=True, text=True)
        if ours.returncode != 0:
            sys.exit(f"allreduce_bench failed:\n{ours.stdout}\n{ours.stderr[-3000:]}")
        mine = last_json(ours.stdout)
        theirs = subprocess.run(torchrun(n) + [peer, str(rank), str(args.iters)],
                                capture_output=True, text=True)
        if theirs.returncode != 0:
            sys.exit(f"the PyTorch all-reduce failed:\n{theirs.stderr[-3000:]}")
        peer_s = last_json(theirs.stdout)["seconds"]
        print(f"(C) rank-{rank} gradients ({mine['bytes'] / 1e9:.2f} GB fp32, "
              f"{mine['elements'] / 1e6:.1f} M values), {n} ranks, {mine['backend']}: "
              f"microrl {mine['seconds']:.3f} s, torch.distributed {peer_s:.3f} s, "
              f"ratio {peer_s / mine['seconds']:.2f}x", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    parser.add_argument("--source_dir", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--ranks_for_c", type=int, default=2)
    parser.add_argument("--parts", default="A,B,C")
    args = parser.parse_args()
    args.build_dir = os.path.abspath(args.build_dir)
    args.source_dir = os.path.abspath(args.source_dir)
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="scale_bench_") as work:
        start = time.time()
        if "A" in parts:
            mode_a(args, work)
        if "B" in parts:
            mode_b(args, work)
        if "C" in parts:
            allreduce(args, work)
        print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
