"""Reference values for one GRPO update of the learner (learner/policy_update.h), computed
with transformers and PEFT on a tiny random Qwen2 model, each completion run on its own with
its whole prompt (as TRL's GRPOTrainer does, no sharing and no packing).

  update_oracle.py --out DIR

writes DIR/model/ (save_pretrained), DIR/adapter/ (PEFT, random A and B), DIR/batch.json
(groups of completions sharing a prompt, lengths from 1 up, advantages, old log-probs,
the loss options) and DIR/expected.safetensors: the loss, the gradient of every LoRA weight
and every LoRA weight after one clipped AdamW step. tests/learner/update_parity_test.cc runs
the same update with microrl's packed, shared-prompt micro-batches (and with packing off)
and compares within float32 rounding.
"""
import argparse
import json
import os
import shutil

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, Qwen2Config

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TEMPERATURE = 0.8
CLIP = 0.2
LR = 1e-2
MAX_GRAD_NORM = 1.0
GROUPS = [(5, [7, 1, 4, 9]), (3, [2, 6, 6]), (8, [11, 3])]  # (prompt length, completions)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    config = Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, rms_norm_eps=1e-6,
                         tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                             attn_implementation="eager")
    with torch.no_grad():  # weights large enough that every layer matters
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.save_pretrained(os.path.join(out, "model"))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                  init_lora_weights=False, lora_dropout=0.0))
    peft_model.save_pretrained(os.path.join(out, "adapter"))
    peft_model.train()

    samples = []
    for prompt_length, lengths in GROUPS:
        prompt = torch.randint(0, config.vocab_size, (prompt_length,), generator=generator)
        for length in lengths:
            samples.append({
                "prompt": prompt.tolist(),
                "completion": torch.randint(0, config.vocab_size, (length,),
                                            generator=generator).tolist(),
                "advantage": float(torch.randn((), generator=generator)),
            })

    def logprobs_of(sample):
        ids = torch.tensor(sample["prompt"] + sample["completion"]).unsqueeze(0)
        logits = peft_model(input_ids=ids).logits[0, len(sample["prompt"]) - 1:-1]
        log_p = torch.log_softmax(logits.float() / TEMPERATURE, -1)
        return log_p.gather(1, torch.tensor(sample["completion"]).unsqueeze(1)).squeeze(1)

    # Old log-probs: the policy's own, moved a little, so that some ratios clip.
    with torch.no_grad():
        for sample in samples:
            current = logprobs_of(sample)
            noise = torch.randn(current.shape, generator=generator) * 0.3
            sample["old_logprobs"] = (current + noise).tolist()

    # TRL's clipped per-token loss, token-mean over the batch.
    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    total_tokens = sum(len(s["completion"]) for s in samples)
    loss = 0
    for sample in samples:
        ratio = torch.exp(logprobs_of(sample) - torch.tensor(sample["old_logprobs"]))
        advantage = sample["advantage"]
        per_token = torch.maximum(-advantage * ratio,
                                  -advantage * torch.clamp(ratio, 1 - CLIP, 1 + CLIP))
        loss = loss + per_token.sum() / total_tokens
    loss.backward()

    def short(name):  # base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
        parts = name.split(".")
        layer = parts[parts.index("layers") + 1]
        return f"{layer}.{parts[-4]}.{parts[-3]}"

    expected = {"loss": loss.detach().reshape(1)}
    for name, p in params.items():
        expected[f"grad.{short(name)}"] = p.grad.detach().clone()
    torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_GRAD_NORM)
    optimizer = torch.optim.AdamW(list(params.values()), lr=LR, weight_decay=0.0)
    optimizer.step()
    for name, p in params.items():
        expected[f"updated.{short(name)}"] = p.detach().clone()
    save_file({k: v.contiguous() for k, v in expected.items()},
              os.path.join(out, "expected.safetensors"))
    with open(os.path.join(out, "batch.json"), "w") as f:
        json.dump({"samples": samples, "temperature": TEMPERATURE, "clip": CLIP, "lr": LR,
                   "max_grad_norm": MAX_GRAD_NORM}, f)
    print(f"{len(samples)} samples in {len(GROUPS)} groups, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
