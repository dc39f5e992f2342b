"""Makes the demo's model, tokenizer and data: everything the CPU demo trains on, created
here rather than downloaded.

  make_demo.py --out DIR [--seed 0]

DIR/model/       a small Qwen2-shaped model with random weights (transformers), and a
                 byte-level BPE tokenizer.json trained by `tokenizers` on the task's text,
                 with a ChatML chat template in tokenizer_config.json
DIR/data/        train.jsonl (problem/answer) for GRPO, sft.jsonl (problem/completion:
                 worked examples) for the warm-up, test.jsonl (held out: no pair of
                 numbers in it appears in the other two)

The task: add two 2-digit numbers. The warm-up examples either work the column
arithmetic out inside <think>...</think> before the result in \\boxed{}, or state the
result directly (--think_fraction sets the mix):
  problem: 47+38=?
  completion: <think>7+8=15 c1, 4+3+1=8</think>\\boxed{85}     (or just \\boxed{85})
A warmed-up model can do both; the worked route is far more often right, and GRPO's
reward (correctness plus the <think> format term) teaches it to take that route.
"""
import argparse
import json
import os
import random

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


# Qwen2's pre-tokenization (the split every Qwen2/Qwen3 tokenizer.json declares): numbers go
# digit by digit. transformers 5 loads any model_type qwen2 directory's tokenizer as its
# Qwen2Tokenizer, which applies this split whatever tokenizer.json says, so a tokenizer
# trained with another split would give transformers users other ids than microrl's.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_tokenizer(corpus, vocab_size):
    """A byte-level BPE tokenizer (`tokenizers`) with SPECIAL and Qwen2's normalizer and
    pre-tokenization, trained on `corpus`."""
    from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                            trainers)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def worked(a, b):
    """The column-by-column worked solution of a + b."""
    steps = []
    carry = 0
    da, db = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        total = x + y + carry
        term = f"{x}+{y}" + (f"+{carry}" if carry else "")
        carry = total // 10
        steps.append(f"{term}={total}" + (" c1" if carry else ""))
    return "<think>" + ", ".join(steps) + "</think>\\boxed{" + str(a + b) + "}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--sft", type=int, default=2000)
    parser.add_argument("--think_fraction", type=float, default=0.4,
                        help="share of warm-up examples that show the worked solution; the "
                             "rest state the answer directly")
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    rng.shuffle(pairs)
    test, rest = pairs[:args.test], pairs[args.test:]
    sft, train = rest[:args.sft], rest[args.sft:]

    data = os.path.join(args.out, "data")
    os.makedirs(data, exist_ok=True)

    def record(a, b, i, split):
        return {"id": f"{split}-{i}", "problem": f"{a}+{b}=?", "answer": str(a + b)}

    with open(os.path.join(data, "test.jsonl"), "w") as f:
        for i, (a, b) in enumerate(test):
            f.write(json.dumps(record(a, b, i, "test")) + "\n")
    with open(os.path.join(data, "train.jsonl"), "w") as f:
        for i, (a, b) in enumerate(train):
            f.write(json.dumps(record(a, b, i, "train")) + "\n")
    with open(os.path.join(data, "sft.jsonl"), "w") as f:
        for i, (a, b) in enumerate(sft):
            r = record(a, b, i, "sft")
            think = rng.random() < args.think_fraction
            r["completion"] = worked(a, b) if think else "\\boxed{" + str(a + b) + "}"
            f.write(json.dumps(r) + "\n")

    # A byte-level BPE tokenizer trained on the task's text (prompts and solutions).
    corpus = ["<|im_start|>user\n" + f"{a}+{b}=?" + "<|im_end|>\n<|im_start|>assistant\n" +
              worked(a, b) for a, b in rest]
    tokenizer = train_tokenizer(corpus, 320)
    model_dir = os.path.join(args.out, "model")
    os.makedirs(model_dir, exist_ok=True)
    tokenizer.save(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "bos_token": None,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=1)

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(args.seed)
    vocab = tokenizer.get_vocab_size()
    config = Qwen2Config(vocab_size=vocab, hidden_size=args.hidden,
                         intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         eos_token_id=tokenizer.token_to_id("<|im_end|>"),
                         bos_token_id=tokenizer.token_to_id("<|endoftext|>"),
                         initializer_range=0.1)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(model_dir, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"demo model: {n / 1e6:.2f}M parameters, vocabulary {vocab}; "
          f"{len(train)} GRPO problems, {len(sft)} worked examples, {len(test)} held out")


if __name__ == "__main__":
    main()
