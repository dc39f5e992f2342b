"""Rollout throughput, microrl's engine against transformers `generate`, on the same
random-weight model, prompts and lengths, in one run.

  rollout_bench.py [--shape qwen2-100m|qwen2.5-1.5b] [--device cpu|cuda] [--prompts 8]
                   [--group 8] [--prompt_len 64] [--new_tokens 64] [--threads N]
                   [--lora_rank R]

--lora_rank R > 0 runs both with the same random LoRA adapter of rank R on all seven
linear layers (as a GRPO rollout runs once the learner has published): PEFT's PeftModel
(unmerged, weights in the model dtype) on the transformers side, the adapter directory
loaded by the engine (--adapter) on microrl's.

Both sample G completions per prompt at temperature 1 (no top-p/top-k), each running to
exactly new_tokens (EOS ignored), and count completion tokens per second of wall time
(prefill included). transformers gets the prompts as one batch with
num_return_sequences=G; microrl gets one GenerationRequest of the same prompts with
group_size G. Prints both rates and the ratio (> 1: microrl is faster). On CUDA it also
prints each rate as a fraction of the memory-bandwidth roofline: every decode step must
read all weights once plus the keys and values cached so far.
"""
import json
import os
import subprocess
import tempfile
import time

import torch

from bench_models import make_or_load, model_parser

# Peak memory bandwidth, bytes/s, by a part of the device name (first match wins).
BANDWIDTH = {"H100 PCIe": 2.0e12, "H100 NVL": 3.9e12, "H100": 3.35e12, "H200": 4.8e12,
             "A100-SXM4-80GB": 2.04e12, "A100": 1.56e12, "A40": 0.696e12, "L40S": 0.864e12}


def roofline_tokens_per_second(config, parameters, bytes_per_value, sequences, prompt_len,
                               new_tokens, bandwidth):
    head_dim = config.hidden_size // config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim \
        * bytes_per_value
    weights = parameters * bytes_per_value
    seconds = sum(weights + sequences * (prompt_len + t) * kv_per_token
                  for t in range(new_tokens)) / bandwidth
    return sequences * new_tokens / seconds


def main():
    parser = model_parser("qwen2-100m", "cpu", bench="rollout_bench", prompts=8, group=8,
                          prompt_len=64, new_tokens=64)
    parser.add_argument("--lora_rank", type=int, default=0,
                        help="a random LoRA adapter of this rank on every linear layer, "
                             "on both sides (0: the base model)")
    parser.add_argument("--skip_transformers", action="store_true",
                        help="measure microrl only (e.g. when transformers would run out "
                             "of memory)")
    parser.add_argument("--variants", default="default",
                        help="comma-separated microrl runs, each 'default' or flags of the "
                             "bench program joined by '+' (e.g. default,cuda_graphs)")
    parser.add_argument("--model_dir", default="",
                        help="the random model's directory, shared with other benchmarks "
                             "(made there if it holds none)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    work = tempfile.mkdtemp(prefix="rollout_bench.")
    model_dir = args.model_dir or os.path.join(work, "model")
    model = make_or_load(args.shape, model_dir, dtype,
                         max(8192, args.prompt_len + args.new_tokens)).to(args.device)
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())
    adapter_flags = []
    if args.lora_rank > 0:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(
            r=args.lora_rank, lora_alpha=args.lora_rank,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"]))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    if "lora_B" in name:
                        p.normal_(0, 0.01)  # not a no-op
                    p.data = p.data.to(dtype)  # PEFT keeps adapters in float32
        model.save_pretrained(os.path.join(work, "adapter"))
        adapter_flags = [f"--adapter={work}/adapter"]
        parameters = sum(p.numel() for p in model.parameters())  # the roofline reads both
    prompts = torch.randint(0, config.vocab_size, (args.prompts, args.prompt_len))
    with open(os.path.join(work, "prompts.json"), "w") as f:
        json.dump(prompts.tolist(), f)
    sequences = args.prompts * args.group
    print(f"model: {args.shape}, {parameters / 1e6:.1f}M parameters, {dtype}, {args.device}; "
          f"{args.prompts} prompts x G={args.group}, {args.prompt_len} prompt tokens, "
          f"{args.new_tokens} new tokens; LoRA rank {args.lora_rank or 'none'}; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    # microrl first, so transformers' allocations do not crowd it on a GPU. Each variant is
    # a set of extra flags for the bench program (e.g. --cuda_graphs).
    rates = {}
    samples = {}
    ours = None
    for variant in args.variants.split(","):
        flags = [f"--{flag}" for flag in variant.split("+") if flag and flag != "default"]
        command = [args.bench_bin, f"--model={model_dir}", f"--prompts={work}/prompts.json",
                   f"--group={args.group}", f"--new_tokens={args.new_tokens}",
                   f"--device={args.device}", f"--threads={args.threads}",
                   *adapter_flags, *flags]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"microrl {variant} failed: {result.stderr[-3000:]}", flush=True)
            continue
        run = json.loads(result.stdout.strip().splitlines()[-1])
        name = "microrl" if variant == "default" else f"microrl {variant}"
        rates[name] = run["tokens_per_second"]
        samples[name] = run["sample"]
        ours = ours or run
        print(f"{name:28s} {run['tokens_per_second']:10.1f} tok/s (group prompts held "
              f"once: {run.get('shared_prompts', 0)}, copied to each slot: "
              f"{run.get('copied_prompts', 0)}; ATen operators per decode step of the "
              f"batch: {run.get('ops_per_decode_step', -1):.0f} called, of which "
              f"{run.get('computing_ops_per_decode_step', -1):.0f} not views; "
              f"{run.get('all_ops_per_decode_step', -1):.0f} with nested ones)", flush=True)
    if len(samples) > 1:
        # Variants run the same seeds: their first completions agree (up to rounding,
        # which may flip a sampled token late).
        base_name, base = next(iter(samples.items()))
        for name, other in list(samples.items())[1:]:
            same = 0
            for a, b in zip(base["token_ids"], other["token_ids"]):
                if a != b:
                    break
                same += 1
            diff = max((abs(a - b) for a, b in zip(base["logprobs"][:same],
                                                   other["logprobs"][:same])), default=0)
            print(f"{name} vs {base_name}: first {same} of {len(base['token_ids'])} tokens "
                  f"equal, max |log-prob difference| over them {diff:.2e}", flush=True)

    if samples:
        # Correctness beside speed: transformers scores microrl's first completion
        # (teacher forcing); its log-probs should match microrl's (1e-4 in float32; bf16
        # rounding on a GPU).
        name, sample = next(iter(samples.items()))
        tokens = torch.tensor(sample["token_ids"], dtype=torch.long)
        ids = torch.cat([prompts[0], tokens]).unsqueeze(0).to(args.device)
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, args.prompt_len - 1:-1].float()
        reference = torch.log_softmax(logits, -1).gather(
            1, tokens.to(args.device).unsqueeze(1)).squeeze(1).cpu()
        diff = (reference - torch.tensor(sample["logprobs"])).abs()
        print(f"{name} log-probs vs transformers scoring the same {len(tokens)} tokens: "
              f"max |difference| {diff.max().item():.2e}, mean {diff.mean().item():.2e}",
              flush=True)

    if not args.skip_transformers:
        ids = prompts.to(args.device)

        def hf_generate(new_tokens):
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                     temperature=1.0, top_p=1.0, top_k=0,
                                     num_return_sequences=args.group,
                                     max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                     pad_token_id=0)
            return out.shape[0] * (out.shape[1] - args.prompt_len)

        hf_generate(4)  # warm-up
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = hf_generate(args.new_tokens)
        if args.device == "cuda":
            torch.cuda.synchronize()
        rates["transformers"] = tokens / (time.perf_counter() - start)

    if "transformers" in rates:
        print(f"transformers {rates['transformers']:10.1f} tok/s; ratio microrl / transformers: "
              + ", ".join(f"{name} {rate / rates['transformers']:.2f}"
                          for name, rate in rates.items() if name != "transformers"))
    if args.device == "cuda":
        name = torch.cuda.get_device_name()
        bandwidth = next((b for key, b in BANDWIDTH.items() if key in name), None)
        if bandwidth is None:
            print(f"no bandwidth known for {name}: roofline not computed")
        else:
            roof = roofline_tokens_per_second(config, parameters, 2, sequences,
                                              args.prompt_len, args.new_tokens, bandwidth)
            print(f"{name}: roofline {roof:.0f} tok/s at {bandwidth / 1e12:.2f} TB/s; " +
                  "; ".join(f"{k} {v / roof:.1%}" for k, v in rates.items()))
    print(json.dumps({"rates": rates, "microrl": ours}))


if __name__ == "__main__":
    main()
