"""The tiny real model of the Python integration tests: a Qwen2 architecture with random
weights, saved by transformers, and the real Qwen3 tokenizer files beside it."""
import os
import shutil

import torch

VOCAB = 151936
EOS = 151645  # <|im_end|>


def make_tiny_qwen2(model_dir, shared, max_positions=512):
    """Saves the model (seed 0) to model_dir with ../shared's Qwen3 tokenizer; returns it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         eos_token_id=EOS, initializer_range=0.2)
    model = Qwen2ForCausalLM(config).eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(shared, "tokenizers", "qwen3", name), model_dir)
    return model
