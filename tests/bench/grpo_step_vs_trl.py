"""Whole GRPO steps: microrl's three services against TRL's GRPOTrainer on the same machine,
model, adapter, prompts' source, reward and settings. Prints, per configuration, the
median seconds per step, per generation (with scoring) and per update of both sides
(steps after the first), and the ratio of TRL's s/step to microrl's (> 1: microrl faster).

  python tests/bench/grpo_step_vs_trl.py [--configs a,b] [--steps 6] [--build_dir build]
        [--source_dir .] [--work DIR] [--sft_steps 300]

Configurations:
  (a) the CPU demo's: its tiny model (0.45M parameters) and addition task, 16 prompts x 8,
      48-token cap, LoRA rank 64, temperature 1, top-p 0.9, lr 2e-4, clip 0.2/0.28, both
      sides starting from one warm-up adapter (`learner sft`, --sft_steps steps, made once
      per work directory) so that completions end as the demo's do.
  (b) the 98M-parameter Qwen2-shaped bench model (bench_models.py's qwen2-100m, random
      weights) with a 32k byte-level BPE tokenizer trained here on the MATH problems
      (its vocabulary is 32k; Qwen's tokenizer would not fit it), 8 MATH train prompts x 8,
      256-token cap, LoRA rank 64 (a fresh adapter: B = 0), the same sampling and loss.

The same on both sides: the model directory, the start adapter (PEFT files; TRL loads
them with PeftModel), the chat template (ChatML, `{problem}` as the user message), group
size, prompts per step, completion cap, temperature, top-p, learning rate (constant),
AdamW (betas 0.9/0.999, eps 1e-8, no weight decay), gradient clipping at 1.0, clip
ranges, token-mean loss over the step's completion tokens (TRL's "dapo"), no KL term, one
optimizer step per step, float32 on the CPU, and the reward: TRL's reward function asks
microrl's reward_service (format term plus correctness) over gRPC, as the learner does.
Not equal (reported with the figures): the problems each side draws (each its own seeded
shuffle), the sampled completions (two samplers), TRL's advantage epsilon (1e-4 against
1e-6), and the micro-batching (microrl by token budget, packed; TRL a fixed number of
sequences per micro-batch, padded). The rollout server's KV cache is sized to hold every
sequence of a step at once (--kv_cache_mb; its 1 GiB default holds 42 of (b)'s 64
max_model_len slots, and the step would decode in two waves), as transformers `generate`
holds all of them.

TRL (tests/bench/requirements-trl.txt) is installed the first time, without dependencies,
into $MICRORL_VENV-trl (default /opt/microrl/venv-trl), next to the project's venv.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SHARED = os.path.abspath(os.path.join(REPO, "..", "shared"))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "support"))
sys.path.insert(0, os.path.join(REPO, "deploy", "demo"))
from make_demo import CHAT_TEMPLATE, train_tokenizer  # noqa: E402  (the demo's ChatML and BPE)
from service_process import generate_stubs, make_demo, start, stop  # noqa: E402

CONFIGS = {
    "a": dict(prompts=16, group=8, cap=48, rank=64, alpha=64, lr=2e-4, temperature=1.0,
              top_p=0.9, clip_low=0.2, clip_high=0.28, micro_batch_tokens=8192,
              trl_micro=64, max_model_len=256),
    "b": dict(prompts=8, group=8, cap=256, rank=64, alpha=64, lr=2e-4, temperature=1.0,
              top_p=0.9, clip_low=0.2, clip_high=0.28, micro_batch_tokens=8192,
              trl_micro=16, max_model_len=2048),
}


def trl_dir():
    return os.environ.get("MICRORL_VENV", "/opt/microrl/venv") + "-trl"


def ensure_trl():
    target = trl_dir()
    requirements = os.path.join(HERE, "requirements-trl.txt")
    stamp = os.path.join(target, ".requirements")
    want = open(requirements).read()
    if os.path.exists(stamp) and open(stamp).read() == want:
        return target
    print(f"installing TRL into {target} (tests/bench/requirements-trl.txt)", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps", "--upgrade", "--target", target, "-r", requirements],
                   check=True)
    with open(stamp, "w") as f:
        f.write(want)
    return target


def math_model(work):
    """(b)'s model directory: qwen2-100m's shape with a 32k BPE trained on MATH problems."""
    from bench_models import make_or_load
    model_dir = os.path.join(work, "math_model")
    if os.path.exists(os.path.join(model_dir, "tokenizer_config.json")):
        return model_dir
    import torch
    make_or_load("qwen2-100m", model_dir, torch.float32, max_position_embeddings=4096,
                 load=False)
    with open(os.path.join(SHARED, "data", "math_train.jsonl")) as f:
        corpus = [json.loads(line)["problem"] for line in f if line.strip()]
    tokenizer = train_tokenizer(corpus, 32000)
    tokenizer.save(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    config["eos_token_id"] = tokenizer.token_to_id("<|im_end|>")
    config["bos_token_id"] = tokenizer.token_to_id("<|endoftext|>")
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"},
                  f, indent=1)
    return model_dir


def fresh_adapter(model_dir, out, rank, alpha):
    """A PEFT adapter as the learner makes one (B = 0), saved for both sides."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    if os.path.exists(os.path.join(out, "adapter_config.json")):
        return out
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets,
                                     lora_dropout=0.0)).save_pretrained(out)
    return out


def learner_config(path, name, work, model_dir, train, adapter, c, steps):
    with open(path, "w") as f:
        f.write(f"""run:
  name: {name}
  output_dir: {work}/runs
  seed: 0
  max_steps: {steps}
  checkpoint_every: 100000
model:
  path: {model_dir}
  gradient_checkpointing: false
lora:
  rank: {c['rank']}
  alpha: {c['alpha']}
  init: {adapter}
data:
  train: {train}
  instruction: "{{problem}}"
rollout:
  prompts_per_step: {c['prompts']}
  group_size: {c['group']}
  max_response_tokens: {c['cap']}
  temperature: {c['temperature']}
  top_p: {c['top_p']}
grpo:
  clip_low: {c['clip_low']}
  clip_high: {c['clip_high']}
  dual_clip: 0
  mini_batches: 1
  micro_batch_tokens: {c['micro_batch_tokens']}
optim:
  lr: {c['lr']}
""")


def kv_cache_mb(model_dir, c):
    """MiB of KV cache for all of a step's sequences in max_model_len slots (float32)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    slot = (2 * config["num_hidden_layers"] * config.get("num_key_value_heads", heads)
            * head_dim * 4 * c["max_model_len"])
    return -(-c["prompts"] * c["group"] * slot // (1 << 20))


def run_microrl(args, work, key, model_dir, train, adapter):
    c = CONFIGS[key]
    # The services keep freed memory (common/base/memory.h; off by default), as measured.
    os.environ.setdefault("MICRORL_KEEP_FREED_MEMORY", "1")
    procs = []
    try:
        reward, ready = start(os.path.join(args.build_dir, "reward_service", "reward_service"),
                              work, f"{key}_reward")
        procs.append(("reward", reward))
        reward_port = ready["grpc_port"]
        rollout, ready = start(os.path.join(args.build_dir, "rollout_server", "rollout_server"),
                               work, f"{key}_rollout",
                               [f"--model={model_dir}", f"--max_model_len={c['max_model_len']}",
                                f"--kv_cache_mb={max(1024, kv_cache_mb(model_dir, c))}"])
        procs.append(("rollout", rollout))
        config = os.path.join(work, f"{key}_microrl.yaml")
        name = f"{key}_microrl_{int(time.time())}"
        learner_config(config, name, work, model_dir, train, adapter, c, args.steps)
        start_time = time.time()
        proc = subprocess.run(
            [os.path.join(args.build_dir, "learner", "learner"), "--port=0", "--metrics_port=0",
             f"--config={config}",
             f"--set=reward.address=127.0.0.1:{reward_port};"
             f"rollout.address=127.0.0.1:{ready['grpc_port']}"],
            capture_output=True, text=True)
        wall = time.time() - start_time
        if proc.returncode != 0:
            sys.exit(f"microrl ({key}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        with open(os.path.join(work, "runs", name, "metrics.jsonl")) as f:
            lines = [json.loads(x) for x in f if '"reward_mean"' in x]
        return lines, wall
    finally:
        for label, p in procs:
            stop(p, label)


def microrl_figures(lines):
    later = lines[1:]

    def med(key):
        return statistics.median(m[key] for m in later)
    return {
        "step": med("time/step"),
        "generate": statistics.median(m["time/generate"] + m["time/score"] for m in later),
        "update": med("time/update"),
        "publish": med("time/publish"),
        "other": statistics.median(m["time/step"] - m["time/generate"] - m["time/score"]
                                   - m["time/update"] - m["time/publish"] for m in later),
        "reward": statistics.mean(m["reward_mean"] for m in lines),
        "length": statistics.mean(m["response_length_mean"] for m in lines),
    }


# ------------------------------------------------------------------------------ TRL side
def trl_worker(spec):
    """Runs in a child process with TRL on sys.path: N GRPO steps, one JSON line of
    per-step timings on stdout."""
    import grpc
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    c = spec["config"]
    torch.manual_seed(0)
    generate_stubs(REPO, spec["stubs"])
    from proto import reward_pb2, reward_pb2_grpc
    stub = reward_pb2_grpc.RewardStub(
        grpc.insecure_channel(f"127.0.0.1:{spec['reward_port']}"))

    def reward(prompts, completions, answer, **kwargs):
        items = []
        for i, (completion, truth) in enumerate(zip(completions, answer)):
            text = completion[0]["content"] if isinstance(completion, list) else completion
            items.append(reward_pb2.ScoreItem(id=str(i), completion=text, ground_truth=truth))
        response = stub.Score(reward_pb2.ScoreRequest(items=items), timeout=60)
        return [r.reward for r in response.results]

    with open(spec["train"]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["problem"]}],
                                  "answer": str(r["answer"])} for r in rows])
    # The fast tokenizer from tokenizer.json (AutoTokenizer in transformers 5.24 may load a
    # slow Qwen2Tokenizer for a qwen2 config, which splits text differently).
    tokenizer = PreTrainedTokenizerFast.from_pretrained(spec["model"])
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    model = PeftModel.from_pretrained(model, spec["adapter"], is_trainable=True)
    generation = c["prompts"] * c["group"]
    config = GRPOConfig(
        output_dir=spec["out"], max_steps=spec["steps"], seed=0, use_cpu=True, bf16=False,
        per_device_train_batch_size=c["trl_micro"],
        gradient_accumulation_steps=generation // c["trl_micro"],
        num_generations=c["group"], max_completion_length=c["cap"],
        temperature=c["temperature"], top_p=c["top_p"], top_k=0,
        learning_rate=c["lr"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=1.0, epsilon=c["clip_low"], epsilon_high=c["clip_high"],
        loss_type="dapo", beta=0.0, num_iterations=1, scale_rewards="group",
        gradient_checkpointing=False, logging_steps=1, report_to="none",
        save_strategy="no", disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, log_completions=False)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config,
                          train_dataset=dataset, processing_class=tokenizer)

    timings = []
    current = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                current[name] = current.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    trainer._generate_and_score_completions = timed(
        "generate_and_score", trainer._generate_and_score_completions)
    trainer._generate = timed("generate", trainer._generate)
    trainer._calculate_rewards = timed("score", trainer._calculate_rewards)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            current.clear()
            current["start"] = time.perf_counter()

        def on_step_end(self, *a, **k):
            step = time.perf_counter() - current.pop("start")
            timings.append(dict(current, step=step))

    trainer.add_callback(StepTimer())
    trainer.train()
    history = trainer.state.log_history
    rewards = [h["reward"] for h in history if "reward" in h]
    lengths = [h["completions/mean_length"] for h in history if "completions/mean_length" in h]
    print(json.dumps({"timings": timings, "rewards": rewards, "lengths": lengths}))


def run_trl(args, work, key, model_dir, train, adapter):
    target = ensure_trl()
    procs = []
    try:
        reward, ready = start(os.path.join(args.build_dir, "reward_service", "reward_service"),
                              work, f"{key}_trl_reward")
        procs.append(("reward", reward))
        spec = {"config": CONFIGS[key], "model": model_dir, "adapter": adapter, "train": train,
                "steps": args.steps, "reward_port": ready["grpc_port"],
                "out": os.path.join(work, f"{key}_trl_out"),
                "stubs": os.path.join(work, "stubs")}
        os.makedirs(spec["stubs"], exist_ok=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [target] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
            TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--trl_worker",
                               json.dumps(spec)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"TRL ({key}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        for label, p in procs:
            stop(p, label)


def trl_figures(result):
    later = result["timings"][1:]

    def med(f):
        return statistics.median(f(t) for t in later)
    return {
        "step": med(lambda t: t["step"]),
        "generate": med(lambda t: t.get("generate_and_score", 0.0)),
        "generate_only": med(lambda t: t.get("generate", 0.0)),
        "score": med(lambda t: t.get("score", 0.0)),
        "update": med(lambda t: t["step"] - t.get("generate_and_score", 0.0)),
        "reward": statistics.mean(result["rewards"]) if result["rewards"] else float("nan"),
        "length": statistics.mean(result["lengths"]) if result["lengths"] else float("nan"),
    }


def prepare(args, work, key):
    """The model directory, the train file and the start adapter of configuration `key`."""
    c = CONFIGS[key]
    if key == "a":
        demo = os.path.join(work, "demo")
        if not os.path.isdir(demo):
            make_demo(args.source_dir, demo, seed=1)
        model_dir = os.path.join(demo, "model")
        train = os.path.join(demo, "data", "train.jsonl")
        adapter = os.path.join(work, "runs", "sft", "adapter")
        if args.sft_steps > 0 and not os.path.exists(os.path.join(adapter, "adapter_config.json")):
            print(f"(a) warm-up adapter: learner sft, {args.sft_steps} steps", flush=True)
            with open(os.path.join(REPO, "deploy", "demo", "sft.yaml")) as f:
                text = f.read()
            config = os.path.join(demo, "sft_bench.yaml")
            with open(config, "w") as f:
                f.write(text.replace("output_dir: runs", f"output_dir: {work}/runs"))
            subprocess.run([os.path.join(args.build_dir, "learner", "learner"), "sft",
                            f"--config={config}", f"--set=run.max_steps={args.sft_steps}"],
                           cwd=demo, check=True, stdout=subprocess.DEVNULL)
        if args.sft_steps <= 0:
            adapter = fresh_adapter(model_dir, os.path.join(work, "a_adapter"), c["rank"],
                                    c["alpha"])
        return model_dir, train, adapter
    model_dir = math_model(work)
    train = os.path.join(SHARED, "data", "math_train.jsonl")
    adapter = fresh_adapter(model_dir, os.path.join(work, "b_adapter"), c["rank"], c["alpha"])
    return model_dir, train, adapter


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--trl_worker":
        return trl_worker(json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="a,b")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--build_dir", default=os.path.join(REPO, "build"))
    parser.add_argument("--source_dir", default=REPO)
    parser.add_argument("--work", default="")
    parser.add_argument("--sft_steps", type=int, default=300)
    parser.add_argument("--sides", default="microrl,trl")
    args = parser.parse_args()
    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="grpo_vs_trl."))
    os.makedirs(work, exist_ok=True)
    sides = args.sides.split(",")
    for key in args.configs.split(","):
        model_dir, train, adapter = prepare(args, work, key)
        c = CONFIGS[key]
        print(f"({key}) {c['prompts']} prompts x {c['group']}, cap {c['cap']}, LoRA rank "
              f"{c['rank']}, {args.steps} steps (medians of steps 2..{args.steps})", flush=True)
        ours = theirs = None
        if "microrl" in sides:
            lines, wall = run_microrl(args, work, key, model_dir, train, adapter)
            ours = microrl_figures(lines)
            print(f"({key}) microrl  {ours['step']:.3f} s/step: generate+score "
                  f"{ours['generate']:.3f}, update {ours['update']:.3f}, publish "
                  f"{ours['publish']:.3f}, other {ours['other']:.3f}; reward "
                  f"{ours['reward']:.3f}, length {ours['length']:.1f} (whole run {wall:.1f} s)",
                  flush=True)
        if "trl" in sides:
            theirs = trl_figures(run_trl(args, work, key, model_dir, train, adapter))
            print(f"({key}) TRL      {theirs['step']:.3f} s/step: generate+score "
                  f"{theirs['generate']:.3f} (generate {theirs['generate_only']:.3f}, score "
                  f"{theirs['score']:.3f}), update {theirs['update']:.3f}; reward "
                  f"{theirs['reward']:.3f}, length {theirs['length']:.1f}", flush=True)
        if ours and theirs:
            print(f"({key}) ratio TRL/microrl: step {theirs['step'] / ours['step']:.2f}x, "
                  f"generate {theirs['generate'] / ours['generate']:.2f}x, update "
                  f"{theirs['update'] / ours['update']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
