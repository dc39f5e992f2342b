"""Model shapes shared by the benchmarks (random weights, made with transformers)."""

SHAPES = {
    # ~98M parameters: 12 layers of width 768, a 32k vocabulary, tied embeddings.
    "qwen2-100m": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048,
                       num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=2,
                       tie_word_embeddings=True),
    # Qwen2.5's vocabulary on a small body: CPU dry runs of scripts that use a Qwen tokenizer.
    "qwen2.5-tiny": dict(vocab_size=151936, hidden_size=256, intermediate_size=704,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True),
    # Qwen2.5-1.5B's shape.
    "qwen2.5-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         tie_word_embeddings=True),
}


def make_or_load(shape, model_dir, dtype, max_position_embeddings=8192, load=True):
    """The random-weight model of `shape` saved in model_dir (made there, seed 0, if the
    directory holds no config.json yet; several benchmarks can then share one), in dtype;
    with load=False only made if missing, and None returned."""
    import os

    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    if os.path.exists(os.path.join(model_dir, "config.json")):
        if not load:
            return None
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    torch.manual_seed(0)
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=max_position_embeddings)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.save_pretrained(model_dir)
    return model


def model_parser(shape, device, bench=None, threads=True, **sizes):
    """An argument parser with what the model benchmarks share: --shape, --device,
    --threads (0: the libraries' default) and, for a benchmark with a program of its own,
    --bench_bin (build/tests/bench/<bench> by default); then one --<name> option per
    keyword, a number of the default's type (batch=4: --batch, an int, default 4)."""
    import argparse
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default=shape, choices=SHAPES)
    parser.add_argument("--device", default=device)
    if threads:
        parser.add_argument("--threads", type=int, default=0)
    if bench:
        parser.add_argument("--bench_bin", default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "../../build/tests/bench", bench))
    for name, default in sizes.items():
        parser.add_argument("--" + name, type=type(default), default=default)
    return parser
