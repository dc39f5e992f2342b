"""Training throughput: microrl's GRPO update against transformers + PEFT, same model, same
LoRA, same batch, same loss.

  train_bench.py [--shape qwen2.5-1.5b] [--device cuda] [--rank 256] [--batch 16]
                 [--prompt 512] [--completion 1024] [--micro_batch_tokens 8192] [--iters 2]
                 [--model_dir DIR] [--bench_bin build/tests/bench/train_bench]

One update of --batch sequences (prompt + completion tokens each, random ids, advantages
+1/-1): both sides run micro-batches of the same number of sequences with gradient
checkpointing, compute per-token log-probs and entropies of the completion, the clipped
GRPO loss (token-mean, clip 0.2) against fixed old log-probs, backward, gradient clipping at
1.0 and one AdamW step on LoRA weights of rank --rank (alpha 128) on all seven linear layers
of every decoder layer, kept in float32. On CUDA the base model is bfloat16 and compute is
bfloat16 (transformers under torch.autocast, as TRL and verl run it). Prints tokens/s
(prompt + completion tokens per second of update) for both and the ratio (> 1: microrl is
faster).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_models import make_or_load, model_parser  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peft_update(model, args, batch_ids, advantages, old_logprobs):
    from peft import LoraConfig, get_peft_model
    model.config.use_cache = False
    peft_model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=128,
                                                  target_modules=TARGETS, lora_dropout=0.0))
    peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.enable_input_require_grads()
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in params), "PEFT kept LoRA weights in float32"
    optimizer = torch.optim.AdamW(params, lr=1e-6)
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


def main():
    parser = model_parser("qwen2.5-1.5b", "cuda", bench="train_bench", rank=256, batch=16,
                          prompt=512, completion=1024, micro_batch_tokens=8192, iters=2)
    parser.add_argument("--model_dir", default="")
    parser.add_argument("--skip_peft", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    model_dir = args.model_dir or os.path.join(tempfile.mkdtemp(prefix="train_bench."), "model")
    model = make_or_load(args.shape, model_dir, dtype)
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
