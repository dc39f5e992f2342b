"""Oracle for the model parity tests: Hugging Face transformers and PEFT, run from
the project's venv.

  parity_oracle.py gen --out DIR    tiny random models of each architecture, inputs
                                    and the expected outputs (logits, PEFT logits,
                                    log-probs, entropies, LoRA gradients)
  parity_oracle.py check --dir DIR  loads the adapters the C++ test saved under
                                    DIR/ours/ into PEFT and compares PEFT's logits
                                    with the C++ logits saved beside them
  parity_oracle.py cli --dir DIR --microrl BIN
                                    runs `microrl logprobs` with each case's PEFT
                                    adapter and compares with PEFT's log-probs

Layout of DIR/<case>/: model/ (save_pretrained), peft_adapter/ (PEFT's
save_pretrained), case.json, expected.safetensors.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LENGTHS = [7, 12, 3]  # sequences of different lengths
TEMPERATURE = 0.7


def cases():
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6)
    return {
        "qwen2": (Qwen2Config(**common, tie_word_embeddings=False), {}),
        "qwen2_sharded": (Qwen2Config(**common, tie_word_embeddings=True), {"shard": True}),
        "qwen3": (Qwen3Config(**common, head_dim=16, tie_word_embeddings=True),
                  {"rslora": True}),
        # llama3 RoPE scaling with a short original context, so the high, medium and
        # low frequency bands all occur at head_dim 16.
        "llama3": (LlamaConfig(**common, tie_word_embeddings=True, rope_parameters={
            "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32}), {}),
    }


def perturb(module, generator, scale=0.02):
    """Randomizes every parameter a little (norm weights start at 1, biases at 0)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def token_stats(logits, ids, temperature):
    """Log-prob of each next token and entropy of each next-token distribution."""
    log_p = torch.log_softmax(logits[:-1].float() / temperature, dim=-1)
    logprobs = log_p.gather(1, ids[1:].unsqueeze(1)).squeeze(1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return logprobs, entropy


def gen(out):
    shutil.rmtree(out, ignore_errors=True)
    for seed, (name, (config, options)) in enumerate(cases().items()):
        case_dir = os.path.join(out, name)
        os.makedirs(case_dir, exist_ok=True)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
        perturb(model, generator)
        model.save_pretrained(os.path.join(case_dir, "model"),
                              max_shard_size="40KB" if options.get("shard") else "5GB")
        expected = {}
        sequences = [torch.randint(0, config.vocab_size, (n,), generator=generator)
                     for n in LENGTHS]
        with torch.no_grad():
            for i, ids in enumerate(sequences):
                expected[f"ids_{i}"] = ids
                expected[f"logits_{i}"] = model(ids.unsqueeze(0)).logits[0]
            # The same sequences as one right-padded batch with an attention mask.
            longest = max(LENGTHS)
            batch = torch.zeros(len(LENGTHS), longest, dtype=torch.long)
            mask = torch.zeros(len(LENGTHS), longest, dtype=torch.long)
            for i, ids in enumerate(sequences):
                batch[i, :len(ids)] = ids
                mask[i, :len(ids)] = 1
            expected["batch_logits"] = model(batch, attention_mask=mask).logits

        lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False,
                          lora_dropout=0.0, use_rslora=bool(options.get("rslora")),
                          rank_pattern={"k_proj": 2} if options.get("rslora") else {},
                          alpha_pattern={"down_proj": 3} if options.get("rslora") else {})
        peft_model = get_peft_model(model, lora)
        peft_model.save_pretrained(os.path.join(case_dir, "peft_adapter"))
        peft_model.eval()
        # A loss over log-probs and entropies with fixed weights, for gradients.
        loss = 0
        for i, ids in enumerate(sequences):
            logits = peft_model(ids.unsqueeze(0)).logits[0]
            expected[f"peft_logits_{i}"] = logits.detach()
            logprobs, entropy = token_stats(logits, ids, TEMPERATURE)
            expected[f"peft_logprobs_{i}"] = logprobs.detach()
            expected[f"peft_entropy_{i}"] = entropy.detach()
            w_lp = torch.randn(len(ids) - 1, generator=generator)
            w_ent = torch.randn(len(ids) - 1, generator=generator)
            expected[f"weight_logprobs_{i}"] = w_lp
            expected[f"weight_entropy_{i}"] = w_ent
            loss = loss + (w_lp * logprobs).sum() + (w_ent * entropy).sum()
        loss.backward()
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_" in parameter_name:
                key = parameter_name.replace(".default", "")
                expected["grad." + key] = parameter.grad.detach().clone()
        save_file({k: v.contiguous() for k, v in expected.items()},
                  os.path.join(case_dir, "expected.safetensors"))
        with open(os.path.join(case_dir, "case.json"), "w") as f:
            json.dump({"lengths": LENGTHS, "temperature": TEMPERATURE,
                       "sharded": bool(options.get("shard"))}, f)
    print(f"parity oracle: wrote {len(cases())} cases to {out}")


def check(directory):
    checked = 0
    for name in cases():
        ours = os.path.join(directory, "ours", name)
        if not os.path.isdir(ours):
            sys.exit(f"missing {ours}: run the C++ parity test first")
        model = AutoModelForCausalLM.from_pretrained(os.path.join(directory, name, "model"),
                                                     dtype=torch.float32).eval()
        peft_model = PeftModel.from_pretrained(model, os.path.join(ours, "adapter")).eval()
        saved = load_file(os.path.join(ours, "logits.safetensors"))
        expected = load_file(os.path.join(directory, name, "expected.safetensors"))
        with torch.no_grad():
            for i in range(len(LENGTHS)):
                logits = peft_model(expected[f"ids_{i}"].unsqueeze(0)).logits[0]
                diff = (logits - saved[f"logits_{i}"]).abs().max().item()
                if diff > 1e-4:
                    sys.exit(f"{name}: PEFT with our adapter differs from our logits by {diff}")
                checked += 1
    print(f"parity oracle: our adapters load in PEFT and match ({checked} sequences)")


def cli(directory, microrl):
    compared = 0
    for name in cases():
        case_dir = os.path.join(directory, name)
        expected = load_file(os.path.join(case_dir, "expected.safetensors"))
        lines = "".join(json.dumps({"ids": expected[f"ids_{i}"].tolist(), "start": 1}) + "\n"
                        for i in range(len(LENGTHS)))
        result = subprocess.run(
            [microrl, "logprobs", f"--model={case_dir}/model",
             f"--adapter={case_dir}/peft_adapter", f"--temperature={TEMPERATURE}",
             "--batch_lines=2"],
            input=lines, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            sys.exit(f"{name}: microrl logprobs failed: {result.stderr}")
        outputs = [json.loads(line) for line in result.stdout.splitlines()]
        if len(outputs) != len(LENGTHS):
            sys.exit(f"{name}: {len(outputs)} output lines for {len(LENGTHS)} inputs")
        for i, output in enumerate(outputs):
            for key in ("logprobs", "entropy"):
                ours = torch.tensor(output[key])
                theirs = expected[f"peft_{key}_{i}"]
                if ours.shape != theirs.shape or (ours - theirs).abs().max().item() > 1e-5:
                    sys.exit(f"{name} line {i}: {key} differ from PEFT's")
            compared += 1
    print(f"parity oracle: microrl logprobs matches PEFT on {compared} sequences")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gen").add_argument("--out", required=True)
    sub.add_parser("check").add_argument("--dir", required=True)
    cli_parser = sub.add_parser("cli")
    cli_parser.add_argument("--dir", required=True)
    cli_parser.add_argument("--microrl", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "gen":
        gen(args.out)
    elif args.command == "check":
        check(args.dir)
    else:
        cli(args.dir, args.microrl)


if __name__ == "__main__":
    main()
