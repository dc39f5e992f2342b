"""Decoder throughput, microrl against transformers, on the same model and inputs.

  model_bench.py [--shape qwen2-100m|qwen2.5-1.5b] [--device cpu|cuda] [--threads N]

Makes a random-weight Qwen2-shaped model with transformers (float32 on the CPU,
bfloat16 on CUDA), saves it, then measures, for both implementations:
  score:  tokens/s of per-token log-probs and entropies of whole sequences
          (one forward pass, as the learner's scoring does)
  decode: tokens/s of greedy generation with a KV cache
and prints each ratio (microrl / transformers; > 1 means microrl is faster).
"""
import json
import os
import subprocess
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from bench_models import SHAPES, model_parser



def timed(fn, iters, device):
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = model_parser("qwen2-100m", "cpu", bench="model_bench", batch=4, seq=256,
                          prompt=32, new_tokens=64, iters=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    config = Qwen2Config(**SHAPES[args.shape], max_position_embeddings=4096)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(args.device).eval()
    parameters = sum(p.numel() for p in model.parameters())
    work = tempfile.mkdtemp(prefix="model_bench.")
    model.save_pretrained(os.path.join(work, "model"))
    print(f"model: {args.shape}, {parameters / 1e6:.1f}M parameters, {dtype}, {args.device}, "
          f"torch threads {torch.get_num_threads()}")

    results = {}
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=args.device)

    def hf_score():
        with torch.inference_mode():
            logits = model(ids).logits[:, :-1].float()
            log_p = torch.log_softmax(logits, dim=-1)
            log_p.gather(2, ids[:, 1:].unsqueeze(2))
            -(log_p.exp() * log_p).sum(-1)

    seconds = timed(hf_score, args.iters, args.device)
    results["score"] = {"transformers": args.iters * args.batch * args.seq / seconds}

    prompts = torch.randint(0, config.vocab_size, (args.batch, args.prompt), device=args.device)

    def hf_decode():
        with torch.inference_mode():
            model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                           max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                           pad_token_id=0)

    seconds = timed(hf_decode, args.iters, args.device)
    results["decode"] = {"transformers": args.iters * args.batch * args.new_tokens / seconds}

    for mode in ("score", "decode"):
        command = [args.bench_bin, f"--model={work}/model", f"--mode={mode}",
                   f"--device={args.device}", f"--batch={args.batch}", f"--seq={args.seq}",
                   f"--prompt={args.prompt}", f"--new_tokens={args.new_tokens}",
                   f"--iters={args.iters}", f"--threads={args.threads}"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[mode]["microrl"] = json.loads(out)["tokens_per_second"]

    for mode, r in results.items():
        print(f"{mode:7s} transformers {r['transformers']:10.1f} tok/s   microrl "
              f"{r['microrl']:10.1f} tok/s   ratio {r['microrl'] / r['transformers']:.2f}")


if __name__ == "__main__":
    main()
