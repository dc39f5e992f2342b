"""Training throughput: microrl's GRPO update against transformers + PEFT, same model, same
LoRA, same batch, same loss.

  train_bench.py [--shape qwen2.5-1.5b] [--device cuda] [--rank 256]
                 [--prompts 8] [--group 8] [--cap 256] [--micro_batch_tokens 8192]
                 [--iters 2] [--model_dir DIR] [--bench_bin build/tests/bench/train_bench]
  train_bench.py --equal_length [--batch 16] [--prompt 512] [--completion 1024] ...

By default one update of a GRPO-shaped batch: --prompts problems of the MATH train split
(../shared/data/math_train.jsonl), put in the Qwen chat template and tokenized with the
Qwen tokenizer (../shared/tokenizers/qwen3; ids folded into the model's vocabulary with a
modulo, which changes no cost), --group completions each, completion lengths drawn from a
log-normal with median 0.4 x --cap and sigma 0.6, clipped to [8, --cap] (a mean near half
the cap and a few at the cap, as the paper's mean lengths of 0.2-0.9 of its 3584-token cap),
random completion ids, and group-normalized advantages of Bernoulli rewards with a
per-group success rate drawn uniformly (some groups all 0 or all 1: zero advantages, kept
in the batch as TRL keeps them). microrl runs it as the learner does: packed micro-batches
of up to --micro_batch_tokens tokens, each group's prompt once per micro-batch (and, for the
breakdown, packed without sharing and padded). The transformers + PEFT side does what TRL's
GRPOTrainer does with the batch: consecutive micro-batches of a fixed number of sequences
(--micro_batch_tokens / (longest prompt + --cap), the same memory bound), prompts
left-padded and completions right-padded to the longest in each micro-batch, every
completion with its own copy of the prompt, TRL's selective log-softmax and entropies, the
same loss. Tokens/s counts real tokens (each sample's prompt and completion, no padding),
the same number on both sides, so the ratio is the ratio of times.

With --equal_length, the old batch: --batch random sequences of --prompt + --completion
tokens, advantages +1/-1, micro-batches of the same number of sequences on both sides.

Both sides use gradient checkpointing, per-token log-probs and entropies of the
completion, the clipped GRPO loss (token-mean, clip 0.2) against fixed old log-probs,
backward, gradient clipping at 1.0 and one AdamW step on LoRA weights of rank --rank
(alpha 128) on all seven linear layers of every decoder layer, kept in float32. On CUDA the
base model is bfloat16 and compute is bfloat16 (transformers under torch.autocast, as TRL
and verl run it). Prints tokens/s for both, the ratio (> 1: microrl is faster) and each
process's peak memory during the update (CUDA: allocated; CPU: resident set, VmHWM).
"""
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "..", "shared"))
sys.path.insert(0, HERE)
from bench_models import make_or_load, model_parser  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peft_training(model, args):
    """The PEFT side's model, trainable LoRA weights (float32) and AdamW: rank --rank,
    alpha 128, all seven linear layers, gradient checkpointing."""
    from peft import LoraConfig, get_peft_model
    model.config.use_cache = False
    peft_model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=128,
                                                  target_modules=TARGETS, lora_dropout=0.0))
    peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.enable_input_require_grads()
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in params), "PEFT kept LoRA weights in float32"
    return peft_model, params, torch.optim.AdamW(params, lr=1e-6)


def peft_update(model, args, batch_ids, advantages, old_logprobs):
    peft_model, params, optimizer = peft_training(model, args)
    seq = args.prompt + args.completion
    per_micro = max(1, args.micro_batch_tokens // seq)
    total_tokens = args.batch * args.completion
    cuda = args.device.startswith("cuda")

    entropies = []

    def one_update():
        entropies.clear()
        optimizer.zero_grad(set_to_none=True)
        for begin in range(0, args.batch, per_micro):
            ids = batch_ids[begin:begin + per_micro]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = peft_model(input_ids=ids).logits[:, args.prompt - 1:-1]
            logits = logits.float()
            targets = ids[:, args.prompt:]
            # TRL's selective log-softmax: gather minus logsumexp, row by row of the batch.
            logprob = torch.stack([
                torch.gather(l, -1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(l, -1)
                for l, t in zip(logits, targets)])
            with torch.no_grad():  # verl's entropy_from_logits, for the metric
                p = torch.softmax(logits, -1)
                entropies.append(torch.logsumexp(logits, -1) - (p * logits).sum(-1))
            ratio = torch.exp(logprob - old_logprobs[begin:begin + per_micro])
            adv = advantages[begin:begin + per_micro].unsqueeze(-1)
            loss = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2)).sum()
            (loss / total_tokens).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    one_update()  # warm-up
    first_entropy = torch.cat([e.flatten() for e in entropies]).float().mean().item()
    seconds = []
    for _ in range(args.iters):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        one_update()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    # Mean token entropy of the first update (B = 0: the base model's, as microrl's).
    return sorted(seconds)[len(seconds) // 2], per_micro, first_entropy


def reset_peak_resident():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_resident_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def grpo_batch(args, vocab_size):
    """The GRPO-shaped batch (see the module's doc): a list of dicts with prompt,
    completion and advantage, groups contiguous."""
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(args.seed)
    with open(args.data) as f:
        problems = [json.loads(line)["problem"] for line in f if line.strip()]
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    samples = []
    for problem in rng.sample(problems, args.prompts):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem + "\nPlease reason step by step, and put "
              "your final answer within \\boxed{}."}],
            tokenize=False, add_generation_prompt=True)
        prompt = [i % vocab_size for i in tokenizer(text)["input_ids"]]
        success = rng.random()
        rewards = [1.0 if rng.random() < success else 0.0 for _ in range(args.group)]
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / max(1, len(rewards) - 1))
        for reward in rewards:
            length = int(round(rng.lognormvariate(math.log(0.4 * args.cap), 0.6)))
            length = max(8, min(args.cap, length))
            samples.append({"prompt": prompt,
                            "completion": [rng.randrange(vocab_size) for _ in range(length)],
                            "advantage": (reward - mean) / (std + 1e-6)})
    return samples


def peft_grpo_update(model, args, samples):
    """TRL GRPOTrainer's update of `samples` with transformers + PEFT: seconds per update
    (median), sequences per micro-batch, mean token entropy of the first update, peak
    memory."""
    peft_model, params, optimizer = peft_training(model, args)
    longest_prompt = max(len(s["prompt"]) for s in samples)
    per_micro = max(1, args.micro_batch_tokens // (longest_prompt + args.cap))
    total_tokens = sum(len(s["completion"]) for s in samples)
    cuda = args.device.startswith("cuda")
    device = args.device
    # The micro-batches' padded tensors, made once (TRL makes them before the update).
    micro = []
    for begin in range(0, len(samples), per_micro):
        part = samples[begin:begin + per_micro]
        p_len = max(len(s["prompt"]) for s in part)
        c_len = max(len(s["completion"]) for s in part)
        ids = torch.zeros(len(part), p_len + c_len, dtype=torch.long)
        attention = torch.zeros(len(part), p_len + c_len, dtype=torch.long)
        completion_mask = torch.zeros(len(part), c_len)
        for i, s in enumerate(part):
            p, c = len(s["prompt"]), len(s["completion"])
            ids[i, p_len - p:p_len] = torch.tensor(s["prompt"])  # left-padded prompt
            ids[i, p_len:p_len + c] = torch.tensor(s["completion"])  # right-padded
            attention[i, p_len - p:p_len + c] = 1
            completion_mask[i, :c] = 1
        micro.append((ids.to(device), attention.to(device), completion_mask.to(device),
                      torch.tensor([s["advantage"] for s in part], device=device), p_len))

    entropies = []

    def one_update():
        entropies.clear()
        optimizer.zero_grad(set_to_none=True)
        for ids, attention, completion_mask, advantages, p_len in micro:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = peft_model(input_ids=ids, attention_mask=attention).logits
            logits = logits[:, p_len - 1:-1].float()
            targets = ids[:, p_len:]
            # TRL's selective_log_softmax (float32: gather minus logsumexp, row by row).
            logprob = torch.stack([
                torch.gather(l, -1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(l, -1)
                for l, t in zip(logits, targets)])
            with torch.no_grad():  # TRL's entropy_from_logits, for its metric
                p = torch.softmax(logits, -1)
                entropies.append(((torch.logsumexp(logits, -1) - (p * logits).sum(-1))
                                  * completion_mask).sum())
            old = torch.full_like(logprob, -12.0)
            ratio = torch.exp(logprob - old)
            adv = advantages.unsqueeze(-1)
            per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2))
            loss = (per_token * completion_mask).sum() / total_tokens  # TRL's "dapo"
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    one_update()  # warm-up
    first_entropy = torch.stack(entropies).sum().item() / total_tokens  # token mean
    seconds = []
    peak = 0
    for _ in range(args.iters):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        reset_peak_resident()
        start = time.perf_counter()
        one_update()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        peak = max(peak, torch.cuda.max_memory_allocated() if cuda else peak_resident_bytes())
    return sorted(seconds)[len(seconds) // 2], per_micro, first_entropy, peak


def run_microrl(args, model_dir, extra):
    command = [args.bench_bin, f"--model={model_dir}", f"--device={args.device}",
               f"--rank={args.rank}", f"--micro_batch_tokens={args.micro_batch_tokens}",
               f"--iters={args.iters}"] + extra
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"train_bench failed: {result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def gib(n):
    return f"{n / 2**30:.2f} GiB"


def grpo_main(args, model, model_dir):
    cuda = args.device.startswith("cuda")
    samples = grpo_batch(args, model.config.vocab_size)
    tokens = sum(len(s["prompt"]) + len(s["completion"]) for s in samples)
    lengths = sorted(len(s["completion"]) for s in samples)
    prompts = sorted({len(s["prompt"]) for s in samples})
    print(f"GRPO batch: {args.prompts} MATH prompts x {args.group} completions; prompt "
          f"tokens {prompts[0]}-{prompts[-1]}; completion tokens min {lengths[0]}, median "
          f"{lengths[len(lengths) // 2]}, mean {sum(lengths) / len(lengths):.0f}, max "
          f"{lengths[-1]} (cap {args.cap}); {tokens} real tokens", flush=True)
    samples_file = os.path.join(os.path.dirname(model_dir), "train_bench_samples.json")
    with open(samples_file, "w") as f:
        json.dump({"samples": samples}, f)
    report = {"tokens": tokens}
    memory = "peak_allocated_bytes" if cuda else "peak_resident_bytes"
    variants = [("microrl", ["--packing=true", "--share_prompts=true"])]
    if args.breakdown:
        variants += [("microrl packed, prompts not shared",
                      ["--packing=true", "--share_prompts=false"]),
                     ("microrl padded", ["--packing=false", "--share_prompts=false"])]
    for label, flags in variants:
        ours = run_microrl(args, model_dir, [f"--samples={samples_file}"] + flags)
        report[label] = ours
        print(f"{label:36s} {ours['tokens_per_second']:9.1f} tok/s ({ours['seconds']:.2f} s per "
              f"update, {ours['micro_batches']} micro-batches, peak {gib(ours[memory])})",
              flush=True)
    if args.skip_peft:
        print(json.dumps(report))
        return
    model = model.to(args.device)
    seconds, per_micro, entropy, peak = peft_grpo_update(model, args, samples)
    rate = tokens / seconds
    report["transformers+peft"] = {"seconds": seconds, "tokens_per_second": rate, memory: peak,
                                   "sequences_per_micro_batch": per_micro, "entropy": entropy}
    ours = report["microrl"]
    print(f"{'transformers+peft (TRL padding)':36s} {rate:9.1f} tok/s ({seconds:.2f} s per "
          f"update, micro-batches of {per_micro} sequences, peak {gib(peak)})")
    print(f"ratio {ours['tokens_per_second'] / rate:.2f} (microrl / transformers+peft, real "
          f"tokens/s); peak memory {gib(ours[memory])} vs {gib(peak)}")
    print(f"mean token entropy of the first update: microrl {ours['entropy']:.6f}, "
          f"transformers+peft {entropy:.6f}")
    print(json.dumps(report))


def main():
    parser = model_parser("qwen2.5-1.5b", "cuda", bench="train_bench", rank=256, batch=16,
                          prompt=512, completion=1024, micro_batch_tokens=8192, iters=2,
                          prompts=8, group=8, cap=256, seed=0)
    parser.add_argument("--model_dir", default="")
    parser.add_argument("--skip_peft", action="store_true")
    parser.add_argument("--equal_length", action="store_true",
                        help="the old batch of equal-length random sequences")
    parser.add_argument("--breakdown", action="store_true",
                        help="also microrl packed without sharing, and padded")
    parser.add_argument("--data", default=os.path.join(SHARED, "data", "math_train.jsonl"))
    parser.add_argument("--tokenizer", default=os.path.join(SHARED, "tokenizers", "qwen3"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    model_dir = args.model_dir or os.path.join(tempfile.mkdtemp(prefix="train_bench."), "model")
    model = make_or_load(args.shape, model_dir, dtype)
    if not args.equal_length:
        print(f"model {args.shape}, {dtype}, {args.device}; LoRA rank {args.rank} (float32) on "
              f"all linear layers; micro-batches of {args.micro_batch_tokens} tokens, gradient "
              f"checkpointing", flush=True)
        return grpo_main(args, model, model_dir)
    seq = args.prompt + args.completion
    print(f"model {args.shape}, {dtype}, {args.device}; LoRA rank {args.rank} (float32) on all "
          f"linear layers; {args.batch} sequences x ({args.prompt} + {args.completion}) tokens, "
          f"micro-batches of {args.micro_batch_tokens} tokens, gradient checkpointing",
          flush=True)

    # One batch for both sides.
    torch.manual_seed(0)
    batch_ids = torch.randint(0, model.config.vocab_size, (args.batch, seq))
    ids_file = os.path.join(os.path.dirname(model_dir), "train_bench_ids.json")
    with open(ids_file, "w") as f:
        json.dump(batch_ids.tolist(), f)
    command = [args.bench_bin, f"--model={model_dir}", f"--device={args.device}",
               f"--ids={ids_file}",
               f"--rank={args.rank}", f"--batch={args.batch}", f"--prompt={args.prompt}",
               f"--completion={args.completion}",
               f"--micro_batch_tokens={args.micro_batch_tokens}", f"--iters={args.iters}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"train_bench failed: {result.stderr}")
    ours = json.loads(result.stdout.strip().splitlines()[-1])
    rates = {"microrl": ours["tokens_per_second"]}
    line = (f"microrl {ours['tokens_per_second']:10.1f} tok/s ({ours['seconds']:.2f} s per update, "
            f"{ours['micro_batches']} micro-batches")
    if cuda:
        line += f", peak {ours['peak_allocated_bytes'] / 2**30:.1f} GiB"
    print(line + ")", flush=True)

    report = {"microrl": ours}
    if not args.skip_peft:
        model = model.to(args.device)
        batch_ids = batch_ids.to(args.device)
        advantages = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(args.batch)],
                                  device=args.device)
        old = torch.full((args.batch, args.completion), -12.0, device=args.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds, per_micro, entropy = peft_update(model, args, batch_ids, advantages, old)
        rates["transformers+peft"] = args.batch * seq / seconds
        line = (f"transformers+peft {rates['transformers+peft']:10.1f} tok/s ({seconds:.2f} s per "
                f"update, micro-batches of {per_micro} sequences")
        if cuda:
            line += f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        print(line + f")   ratio {rates['microrl'] / rates['transformers+peft']:.2f}")
        print(f"mean token entropy of the batch: microrl {ours['entropy']:.6f}, "
              f"transformers+peft {entropy:.6f} (same model; LoRA B = 0 at the first update)")
        report["transformers+peft"] = {"seconds": seconds, "tokens_per_second": rates["transformers+peft"]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
