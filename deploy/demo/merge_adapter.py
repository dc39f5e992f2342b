"""Merges a PEFT LoRA adapter into its base model and writes the result as a Hugging Face
model directory (weights, config, tokenizer files): a warm start for runs of any LoRA
rank. configs/demo/study.yaml uses it to turn the demo's warm-up adapter into the base
model of its three ranks.

  merge_adapter.py --model DIR --adapter PEFT_DIR --out DIR
"""
import argparse
import os
import shutil

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, args.adapter).merge_and_unload()
    tmp = args.out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    for name in os.listdir(args.model):
        if name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab",
                            "merges", "generation_config")):
            shutil.copy(os.path.join(args.model, name), os.path.join(tmp, name))
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)
    print(f"merged {args.adapter} into {args.model}: {args.out}")


if __name__ == "__main__":
    main()
