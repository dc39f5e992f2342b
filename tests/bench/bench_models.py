"""Model shapes shared by the benchmarks (random weights, made with transformers)."""

SHAPES = {
    # ~98M parameters: 12 layers of width 768, a 32k vocabulary, tied embeddings.
    "qwen2-100m": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048,
                       num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=2,
                       tie_word_embeddings=True),
    # Qwen2.5-1.5B's shape.
    "qwen2.5-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         tie_word_embeddings=True),
}
