"""Writes the fuzz targets' seed corpora into tests/fuzz/corpus/<target>/ (committed;
rerun to regenerate; files named found_* are inputs fuzzing once failed on, kept as
regression seeds): valid inputs, and the hostile files a user or a peer could hand
the parsers (truncated, lying or overlapping safetensors headers, huge sizes, corrupt
tokenizer.json files, pathological templates).

  make_corpus.py [--shared ../shared]
"""
import argparse
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def safetensors_image(header, data=b"", pad=True):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    ok = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
          "__metadata__": {"format": "pt"}}
    seeds = {
        "valid": safetensors_image(ok, f32),
        "valid_two": safetensors_image(
            {"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
             "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}, b"\x00" * 8),
        "empty_tensor": safetensors_image(
            {"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}}),
        "truncated_header": safetensors_image(ok, f32)[:20],
        "truncated_data": safetensors_image(ok, f32)[:-5],
        "length_only": struct.pack("<Q", 64),
        "huge_header_length": struct.pack("<Q", 1 << 62) + b"{}",
        "offsets_past_end": safetensors_image(
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}, f32),
        "offsets_reversed": safetensors_image(
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, f32),
        "overlapping": safetensors_image(
            {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, f32),
        "shape_overflow": safetensors_image(
            {"a": {"dtype": "F64", "shape": [1 << 31, 1 << 31, 1 << 31],
                   "data_offsets": [0, 16]}}, f32),
        "negative_dim": safetensors_image(
            {"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, f32),
        "size_mismatch": safetensors_image(
            {"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, f32),
        "bad_dtype": safetensors_image(
            {"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, f32),
        "not_object": safetensors_image([1, 2, 3], f32),
        "bad_json": struct.pack("<Q", 9) + b'{"a":{"d' + f32,
        "float_offsets": safetensors_image(
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0.5, 16]}}, f32),
        "metadata_not_string": safetensors_image({"__metadata__": {"k": [1]}}),
        "duplicate_key": struct.pack("<Q", 120) + (
            b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
            b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}').ljust(120) + f32,
        "gap_before_data": safetensors_image(
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, f32),
    }
    return seeds


def tokenizer_seeds(shared):
    texts = ["Hello, world!", "  leading spaces\tand\ttabs\n\n", "caf\u00e9 e\u0301 \u00c5",
             "\u4f60\u597d\uff0c\u4e16\u754c", "<|im_start|>user\nhi<|im_end|>",
             "x^2 + \\frac{1}{2} = \\boxed{3}", "\U0001f600\U0001f468\u200d\U0001f469",
             "'s 've 're I'M 1234567", "\xff\xfe invalid"]
    seeds = {}
    for i, text in enumerate(texts):
        raw = text.encode("utf-8", "surrogateescape") if "\xff" not in text else \
            b"\xff\xfe invalid \xc3"
        seeds[f"encode_{i}"] = b"\x00" + raw
    seeds["decode_ids"] = b"\x01" + struct.pack("<8i", 9707, 11, 1879, 0, -1, 151643,
                                                 1 << 30, 151644)
    seeds["decode_partial_utf8"] = b"\x01" + struct.pack("<3i", 145, 236, 102)
    small = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 5, "content": "<s>", "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {"H": 0, "e": 1, "l": 2, "o": 3, "He": 4},
                  "merges": [["H", "e"]]},
    }
    good = json.dumps(small).encode()
    seeds["json_small"] = b"\x02" + good
    seeds["json_truncated"] = b"\x02" + good[: len(good) // 2]
    bad = json.loads(good)
    bad["model"]["merges"] = [["H", "missing"], ["x"], 7]
    seeds["json_bad_merges"] = b"\x02" + json.dumps(bad).encode()
    bad = json.loads(good)
    bad["model"]["vocab"] = {"H": -3, "e": 1 << 40, "l": "two"}
    seeds["json_bad_vocab"] = b"\x02" + json.dumps(bad).encode()
    bad = json.loads(good)
    bad["added_tokens"] = [{"id": 99999999, "content": ""}]
    seeds["json_bad_added"] = b"\x02" + json.dumps(bad).encode()
    bad = json.loads(good)
    bad["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(((("},
                            "behavior": "Isolated", "invert": False}
    seeds["json_bad_regex"] = b"\x02" + json.dumps(bad).encode()
    bad = json.loads(good)
    bad["model"]["vocab"]["o"] = 2_000_000_000  # a table of 2e9 entries, refused
    seeds["json_huge_vocab_id"] = b"\x02" + json.dumps(bad).encode()
    bad = json.loads(good)
    bad["added_tokens"][0]["id"] = 1 << 31
    seeds["json_huge_added_id"] = b"\x02" + json.dumps(bad).encode()
    bad = json.loads(good)
    bad["post_processor"] = {"type": "TemplateProcessing",
                             "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}},
                                        {"Sequence": {"id": "A", "type_id": 0}}],
                             "special_tokens": {"<x>": {"id": "<x>", "ids": [999999],
                                                        "tokens": ["<x>"]}}}
    seeds["json_post_processor_unknown_id"] = b"\x02" + json.dumps(bad).encode()
    seeds["json_not_object"] = b"\x02[1,2,3]"
    seeds["json_deep"] = b"\x02" + b"[" * 5000 + b"]" * 5000
    return seeds


def chat_template_seeds(shared):
    seeds = {}
    chat = os.path.join(shared, "chat_templates")
    if os.path.isdir(chat):
        for name in sorted(os.listdir(chat)):
            with open(os.path.join(chat, name), "rb") as f:
                seeds["vendor_" + os.path.splitext(name)[0]] = f.read() + b"\x01Hi there"
    hostile = {
        "unterminated": b"{% for m in messages %}{{ m.content }\x01x",
        "deep_parens": b"{{ " + b"(" * 3000 + b"1" + b")" * 3000 + b" }}\x01x",
        "big_range": b"{% for i in range(1000000000) %}x{% endfor %}\x01x",
        "string_repeat": b"{{ 'ab' * 1000000000 }}\x01x",
        "nested_loops": b"{% for a in range(100000) %}{% for b in range(100000) %}"
                        b"{{ a }}{% endfor %}{% endfor %}\x01x",
        "raise": b"{{ raise_exception('no') }}\x01x",
        "unknown_filter": b"{{ messages | nope }}\x01x",
        "division": b"{{ 1 // 0 }}{{ 1 % 0 }}\x01x",
        "slices": b"{{ messages[0].content[::-1][5:-1:0] }}\x01hello",
        "namespace": b"{% set ns = namespace(a=1) %}{% set ns.a = ns.a + 1 %}{{ ns.a }}\x01x",
        "tojson": b"{{ messages | tojson(indent=2) }}\x01\"\\\xff",
    }
    seeds.update(hostile)
    return seeds


def model_files_seeds():
    qwen = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "hidden_size": 96, "intermediate_size": 384, "num_hidden_layers": 3,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "tie_word_embeddings": True, "hidden_act": "silu", "torch_dtype": "float32",
            "eos_token_id": 2, "bos_token_id": 0}
    seeds = {"config_qwen2": b"\x00" + json.dumps(qwen).encode()}
    llama = dict(qwen, architectures=["LlamaForCausalLM"], model_type="llama",
                 rope_scaling={"rope_type": "llama3", "factor": 32.0,
                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192})
    seeds["config_llama3"] = b"\x00" + json.dumps(llama).encode()
    for name, change in (("heads_not_dividing", {"num_attention_heads": 5}),
                         ("kv_not_dividing", {"num_key_value_heads": 3}),
                         ("negative", {"hidden_size": -96}),
                         ("huge", {"hidden_size": 1 << 40, "vocab_size": 1 << 40}),
                         ("zero_layers", {"num_hidden_layers": 0}),
                         ("string_sizes", {"hidden_size": "96"}),
                         ("unknown_arch", {"architectures": ["MambaForCausalLM"]}),
                         ("sliding", {"use_sliding_window": True, "sliding_window": 16}),
                         ("gelu", {"hidden_act": "gelu"}),
                         ("eos_list", {"eos_token_id": [2, 3, -1]}),
                         ("float_eps", {"rms_norm_eps": "nan"})):
        seeds["config_" + name] = b"\x00" + json.dumps(dict(qwen, **change)).encode()
    seeds["config_truncated"] = b"\x00" + json.dumps(qwen).encode()[:60]
    seeds["config_not_object"] = b"\x00[]"
    lines = [json.dumps({"problem": "1+1=?", "answer": "2"}),
             json.dumps({"problem": "x", "answer": 7}),
             "", "  ", json.dumps({"problem": "y", "answer": "\\frac{1}{2}", "id": "p3"})]
    seeds["jsonl_valid"] = b"\x01" + "\n".join(lines).encode()
    seeds["jsonl_crlf_bom"] = b"\x01\xef\xbb\xbf" + "\r\n".join(lines).encode()
    seeds["jsonl_bad_line"] = b"\x01" + (lines[0] + "\n{\"problem\": \n").encode()
    seeds["jsonl_missing_field"] = b"\x01" + json.dumps({"problem": "z"}).encode()
    seeds["jsonl_wrong_types"] = b"\x01" + json.dumps({"problem": [1], "answer": None}).encode()
    seeds["jsonl_not_object"] = b"\x01[1,2]\n\"text\"\n3"
    seeds["jsonl_invalid_utf8"] = b"\x01{\"problem\": \"\xff\xfe\", \"answer\": \"1\"}"
    seeds["jsonl_deep"] = b"\x01" + b"[" * 3000 + b"]" * 3000
    return seeds


def reward_seeds(shared):
    seeds = {}
    n = 0
    for name in ("math500", "aime24", "amc23"):
        path = os.path.join(shared, "data", name + ".jsonl")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i % 5:
                    continue  # every fifth answer keeps the corpus small
                answer = json.loads(line)["answer"]
                seeds[f"{name}_{i}"] = (
                    f"<|im_start|>assistant\n\x01<think>\nwork\n</think>\n\n"
                    f"So \\boxed{{{answer}}}.\x01{answer}").encode()
                n += 1
    return seeds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=os.path.join(HERE, "..", "..", "..", "shared"))
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.shared, "data")):
        args.shared = "/work/shared"
    for target, seeds in (("safetensors", safetensors_seeds()),
                          ("tokenizer", tokenizer_seeds(args.shared)),
                          ("chat_template", chat_template_seeds(args.shared)),
                          ("model_files", model_files_seeds()),
                          ("reward", reward_seeds(args.shared))):
        out = os.path.join(HERE, "corpus", target)
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(out):  # inputs fuzzing found (found_*) are kept
            if not name.startswith("found_"):
                os.remove(os.path.join(out, name))
        for name, data in seeds.items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
