"""What microrl writes, loaded as a transformers / PEFT user would (issue 21, item 3).

  interop_test.py --build_dir BUILD --source_dir SRC

Makes the CPU demo's model directory (deploy/demo/make_demo.py), has `learner sft` write
a LoRA adapter on it, then loads both with transformers' AutoTokenizer and
AutoModelForCausalLM and PEFT's PeftModel, with no tokenizer class named, and checks:
  - token ids: AutoTokenizer (plain text, and its chat template with the generation
    prompt) equal `tokenizers` reading tokenizer.json and microrl's own tokenizer
    (`microrl tokenize`, `microrl render-chat`), on the demo's prompts and worked
    solutions, multi-digit numbers included;
  - decoding: AutoTokenizer gives the text back;
  - log-probs: every token's log-prob under AutoModelForCausalLM equals microrl's
    (`microrl logprobs`), for the base model and with the adapter through PeftModel,
    within 2e-5; the adapter changes them (so the comparison is of a trained adapter).
Exits 1 naming the first check that fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import require  # noqa: E402


def run_lines(argv, lines):
    """Runs a microrl command over JSON lines; returns the parsed output lines."""
    proc = subprocess.run(argv, input="".join(json.dumps(x) + "\n" for x in lines),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=600)
    if proc.returncode != 0:
        sys.exit(f"FAIL {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    parser.add_argument("--source_dir", required=True)
    parser.add_argument("--sft_steps", type=int, default=30)
    args = parser.parse_args()
    build_dir = os.path.abspath(args.build_dir)
    microrl = os.path.join(build_dir, "tools", "microrl", "microrl")
    learner = os.path.join(build_dir, "learner", "learner")

    with tempfile.TemporaryDirectory(prefix="interop_") as out:
        subprocess.run([sys.executable,
                        os.path.join(args.source_dir, "deploy", "demo", "make_demo.py"),
                        "--out", out, "--sft", "400", "--test", "16"],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(args.source_dir, "deploy", "demo", "sft.yaml")) as f:
            sft_yaml = f.read()
        with open(os.path.join(out, "sft.yaml"), "w") as f:
            f.write(sft_yaml)
        proc = subprocess.run([learner, "sft", "--config=sft.yaml",
                               f"--set=run.max_steps={args.sft_steps};run.seed=0"],
                              cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=900)
        require(proc.returncode == 0, f"learner sft wrote an adapter (exit {proc.returncode})"
              + ("" if proc.returncode == 0 else ": " + proc.stdout[-2000:]))
        model_dir = os.path.join(out, "model")
        adapter_dir = os.path.join(out, "runs", "sft", "adapter")
        require(os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")),
              f"the adapter is at {adapter_dir}")

        import torch
        from peft import PeftModel
        from tokenizers import Tokenizer
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with open(os.path.join(out, "data", "test.jsonl")) as f:
            problems = [json.loads(line) for line in f]
        with open(os.path.join(out, "data", "sft.jsonl")) as f:
            worked = [json.loads(line) for line in f][:16]
        texts = ([p["problem"] for p in problems] + [w["completion"] for w in worked] +
                 ["10+25=?", "The sum of 1234 and 98 is \\boxed{1332}.", "99 + 1 = 100\n"])

        auto = AutoTokenizer.from_pretrained(model_dir)
        raw = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        print(f"AutoTokenizer loads {type(auto).__name__}", flush=True)
        ours = run_lines([microrl, "tokenize", f"--tokenizer={model_dir}/tokenizer.json"],
                         [{"text": t} for t in texts])
        for text, mine in zip(texts, ours):
            want = raw.encode(text, add_special_tokens=False).ids
            got = auto(text, add_special_tokens=False)["input_ids"]
            require(got == want == mine["ids"],
                  f"ids of {text!r}: AutoTokenizer {got}, tokenizer.json {want}, "
                  f"microrl {mine['ids']}")
            require(auto.decode(got) == text, f"AutoTokenizer decodes {text!r} back")

        # Prompts through the chat template, as the learner and a transformers user make them.
        conversations = [[{"role": "user", "content": p["problem"]}] for p in problems]
        rendered = run_lines(
            [microrl, "render-chat",
             f"--tokenizer_config={model_dir}/tokenizer_config.json"],
            [{"messages": m, "add_generation_prompt": True} for m in conversations])
        sequences = []
        for messages, mine, w in zip(conversations, rendered, worked):
            got = auto.apply_chat_template(messages, add_generation_prompt=True,
                                           tokenize=True, return_dict=False)
            want = raw.encode(mine["text"], add_special_tokens=False).ids
            require(list(got) == want,
                  f"chat-templated ids of {messages[0]['content']!r} agree "
                  f"({len(want)} tokens)")
            sequences.append({"prompt": len(want),
                              "ids": want + raw.encode(w["completion"] + "<|im_end|>",
                                                       add_special_tokens=False).ids})

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model.eval()

        def reference(m):
            result = []
            with torch.no_grad():
                for s in sequences:
                    ids = torch.tensor([s["ids"]])
                    logits = m(input_ids=ids).logits[0, :-1].float()
                    lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
                    result.append(lp[s["prompt"] - 1:].tolist())
            return result

        def microrl_logprobs(adapter):
            argv = [microrl, "logprobs", f"--model={model_dir}"]
            if adapter:
                argv.append(f"--adapter={adapter}")
            lines = run_lines(argv, [{"ids": s["ids"], "start": s["prompt"]}
                                     for s in sequences])
            return [line["logprobs"] for line in lines]

        def max_diff(a, b):
            return max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v))

        base_ref, base_ours = reference(model), microrl_logprobs("")
        require(all(len(u) == len(v) for u, v in zip(base_ref, base_ours)),
              "microrl scores the same completion tokens")
        diff = max_diff(base_ref, base_ours)
        require(diff <= 2e-5, f"base model: log-probs of {sum(map(len, base_ref))} completion "
              f"tokens, AutoModelForCausalLM vs microrl, max |diff| {diff:.2e}")

        peft_model = PeftModel.from_pretrained(model, adapter_dir)
        peft_model.eval()
        tuned_ref, tuned_ours = reference(peft_model), microrl_logprobs(adapter_dir)
        diff = max_diff(tuned_ref, tuned_ours)
        require(diff <= 2e-5, f"with the adapter: PeftModel vs microrl, max |diff| {diff:.2e}")
        moved = max_diff(tuned_ref, base_ref)
        require(moved > 1e-2, f"the adapter changes the log-probs (max {moved:.3f})")
    print("interop: all checks passed")


if __name__ == "__main__":
    main()
