"""One full GRPO step of the paper's configuration on one GPU inside a memory budget, with
the three real services: time per phase and peak memory per process.

  grpo_step.py [--device cuda] [--shape qwen2.5-1.5b] [--config configs/paper/...r256.yaml]
               [--budget_gib 48] [--rollout_gib 12] [--learner_gib 36] [--steps 1]
               [--max_response_tokens 3584] [--model_dir DIR] [--tokenizer_dir DIR]
               [--bin_dir build]

The model is random-weight (Qwen2.5-1.5B's shape, bfloat16) with a Qwen tokenizer and chat
template copied beside it, so completions are noise that rarely ends before
--max_response_tokens: every completion runs to the cap, the worst case for time and
memory. The learner takes the paper's preset (LoRA rank 256 on all linear layers, G = 4,
4 prompts per step, 3584-token responses, colocated: the rollout server sleeps during the
update) with grpo.filter_zero_variance off, so that the update runs on all 16 completions
although every reward is 0 (advantages are then 0, the work is the same). The rollout
server is capped with --gpu_memory_gib and the learner with model.gpu_memory_gib; the two
caps add up to --budget_gib. Prints each phase's seconds from the learner's metrics, each
process's peak GPU memory (the learner's step peak from its metrics; the rollout server's
from its /metrics gauge) against its cap, and whether both stayed inside.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "support"))
from bench_models import make_or_load, model_parser  # noqa: E402
import service_process  # noqa: E402

GIB = 2 ** 30


def scrape(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def main():
    parser = model_parser("qwen2.5-1.5b", "cuda", threads=False, steps=1,
                          max_response_tokens=3584)
    parser.add_argument("--config", default=os.path.join(
        REPO, "configs/paper/qwen2.5-1.5b-instruct-r256.yaml"))
    parser.add_argument("--budget_gib", type=float, default=48)
    parser.add_argument("--rollout_gib", type=float, default=12)
    parser.add_argument("--learner_gib", type=float, default=36)
    parser.add_argument("--model_dir", default="")
    parser.add_argument("--tokenizer_dir", default="",
                        help="tokenizer.json and tokenizer_config.json (with a chat template) "
                             "to put beside the model (default: ../shared/tokenizers/qwen3)")
    parser.add_argument("--bin_dir", default=os.path.join(REPO, "build"),
                        help="where rollout_server, reward_service and learner are (a build "
                             "directory, or a flat folder of the three)")
    parser.add_argument("--out", default="", help="keep the run's files here")
    parser.add_argument("--rollout_flags", default="",
                        help="extra rollout_server flags, space-separated (e.g. --cuda_graphs)")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and args.rollout_gib + args.learner_gib > args.budget_gib:
        sys.exit("--rollout_gib + --learner_gib exceed --budget_gib")

    def binary(name, subdir):
        for path in (os.path.join(args.bin_dir, subdir, name), os.path.join(args.bin_dir, name)):
            if os.access(path, os.X_OK):
                return path
        sys.exit(f"no {name} under {args.bin_dir}")

    rollout_bin = binary("rollout_server", "rollout_server")
    reward_bin = binary("reward_service", "reward_service")
    learner_bin = binary("learner", "learner")

    work = args.out or tempfile.mkdtemp(prefix="grpo_step.")
    os.makedirs(work, exist_ok=True)
    model_dir = args.model_dir or os.path.join(work, "model")
    import torch
    make_or_load(args.shape, model_dir, torch.bfloat16 if cuda else torch.float32, load=False)
    tokenizer_dir = args.tokenizer_dir or os.path.join(REPO, "..", "shared", "tokenizers", "qwen3")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not os.path.exists(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(tokenizer_dir, name), model_dir)
    # Problems with answers (a random model gets none right; the reward is still computed).
    problems = os.path.join(work, "problems.jsonl")
    with open(problems, "w") as f:
        for i in range(64):
            a, b = 17 + 7 * i, 23 + 11 * i
            f.write(json.dumps({"problem": f"Compute {a} \\times {b}.", "answer": str(a * b)})
                    + "\n")

    procs = []
    try:
        reward, reward_ports = service_process.start(reward_bin, work, "reward_service")
        procs.append((reward, "reward_service"))
        rollout_args = [f"--model={model_dir}", f"--device={args.device}",
                        f"--max_model_len={args.max_response_tokens + 512}",
                        # 16 sequences of max_model_len tokens (28 KiB each for this shape)
                        # and room for the prompts of the next step.
                        "--kv_cache_mb=2048"]
        if cuda:
            rollout_args.append(f"--gpu_memory_gib={args.rollout_gib}")
        rollout_args += args.rollout_flags.split()
        rollout, rollout_ports = service_process.start(rollout_bin, work, "rollout_server",
                                                       rollout_args)
        procs.append((rollout, "rollout_server"))
        overrides = [
            f"model.path={model_dir}", f"model.device={args.device}",
            f"data.train={problems}", f"run.output_dir={work}/runs", "run.name=grpo_step",
            f"run.max_steps={args.steps}", f"run.checkpoint_every={args.steps}",
            f"rollout.address=127.0.0.1:{rollout_ports['grpc_port']}",
            f"reward.address=127.0.0.1:{reward_ports['grpc_port']}",
            f"rollout.max_response_tokens={args.max_response_tokens}",
            "grpo.filter_zero_variance=false", "eval.every=0", "eval.path=",
            "eval.final_datasets=[]"]
        if cuda:
            overrides.append(f"model.gpu_memory_gib={args.learner_gib}")
        else:
            overrides.append("model.dtype=float32")
        start = time.time()
        with open(os.path.join(work, "learner.log"), "w") as log:
            learner = subprocess.run(
                [learner_bin, f"--config={args.config}", "--port=0", "--metrics_port=0",
                 "--set=" + ";".join(overrides)], stdout=log, stderr=subprocess.STDOUT,
                timeout=1800)
        wall = time.time() - start
        if learner.returncode != 0:
            print(open(os.path.join(work, "learner.log")).read()[-4000:])
            sys.exit(f"the learner exited with {learner.returncode}")
        time.sleep(1.2)  # the rollout server refreshes its memory gauges once a second
        rollout_peak = scrape(rollout_ports["metrics_port"],
                              "microrl_rollout_device_memory_peak_reserved_bytes") or 0
        steps = [json.loads(line) for line in
                 open(os.path.join(work, "runs", "grpo_step", "metrics.jsonl"))
                 if line.strip()]
        steps = [s for s in steps if "time/step" in s]
    finally:
        for proc, name in reversed(procs):
            error = service_process.stop(proc, name)
            if error:
                print(error)

    print(f"{len(steps)} GRPO step(s) of {args.config} on {args.device}: learner wall time "
          f"{wall:.1f} s (start-up, model load and final checkpoint included)")
    for s in steps:
        tokens = s.get("response_length_mean", 0) * 16
        print(f"step {s['step']}: generate {s['time/generate']:.1f} s "
              f"({s['generate_tokens_per_second']:.0f} tok/s, mean length "
              f"{s['response_length_mean']:.0f}, {tokens:.0f} tokens), score "
              f"{s['time/score']:.2f} s, update {s['time/update']:.1f} s "
              f"({s['update_tokens_per_second']:.0f} completion tok/s), publish "
              f"{s['time/publish']:.2f} s, step {s['time/step']:.1f} s")
    if not cuda:
        print(json.dumps({"steps": steps}))
        return
    learner_peak = max(s.get("gpu_memory_peak_reserved_bytes", 0) for s in steps)
    rows = [("rollout_server", rollout_peak, args.rollout_gib),
            ("learner", learner_peak, args.learner_gib)]
    inside = True
    for name, peak, cap in rows:
        ok = peak <= cap * GIB
        inside &= ok
        print(f"{name:15s} peak reserved {peak / GIB:6.2f} GiB of its {cap:.0f} GiB cap "
              f"{'(inside)' if ok else '(OVER)'}")
    total = rollout_peak + learner_peak
    print(f"together {total / GIB:.2f} GiB of the {args.budget_gib:.0f} GiB budget: "
          f"{'inside' if inside and total <= args.budget_gib * GIB else 'NOT inside'}")
    print(json.dumps({"steps": steps, "rollout_peak_reserved_bytes": rollout_peak,
                      "learner_peak_reserved_bytes": learner_peak}))


if __name__ == "__main__":
    main()
