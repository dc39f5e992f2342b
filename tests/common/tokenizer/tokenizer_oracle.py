"""Oracle for the tokenizer and chat templates: Hugging Face `tokenizers` and
transformers' chat-template rendering, against the `microrl` tool.

  tokenizer_oracle.py encode --microrl BIN --shared DIR
      every problem, answer and solution in DIR/data/*.jsonl plus a seeded corpus of
      random Unicode and whitespace strings, encoded by `microrl tokenize` and by
      tokenizers.Tokenizer (Qwen3 and Llama-3 files in DIR/tokenizers); also decoded
      back by `microrl detokenize` and by tokenizers
  tokenizer_oracle.py jinja --microrl BIN
      small templates covering the Jinja features chat templates use, rendered by
      `microrl render-chat` and by transformers (jinja2)
  tokenizer_oracle.py chat --microrl BIN --shared DIR
      conversations rendered by `microrl render-chat` and by transformers'
      render_jinja_template with each template: the Qwen3 and Llama-3
      tokenizer_config.json files and DIR/chat_templates/*.jinja
Exit status 1 on any difference, with the first few listed.
"""
import argparse
import atexit
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer


def run_tool(microrl, args, lines):
    result = subprocess.run([microrl] + args, input="".join(json.dumps(l) + "\n" for l in lines),
                            capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        sys.exit(f"microrl {' '.join(args)} failed: {result.stderr}")
    # JSON lines end with "\n" only (splitlines would also split at U+2028 etc.).
    return [json.loads(line) for line in result.stdout.split("\n") if line]


def random_strings(count, seed):
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789", " .,;:!?'\"()[]{}<>/\\|@#$%^&*-+=_~`",
        " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2007\u200a\u2028\u2029"
        "\u202f\u205f\u3000\ufeff\u200b",
        "éèêëàâäôöûüçñßøåæœ", "e\u0301a\u0300o\u0308\u0327\u0303",  # combining marks (NFC)
        "你好世界数学答案问题", "こんにちはカタカナ", "안녕하세요", "مرحبا١٢٣٤٥", "привет мир",
        "١٢٣٤٥٦٧٨٩٠０１２３４５²³½Ⅻ", "😀🎉👍🏽👨‍👩‍👧🇺🇸", "ſſſ'ſ'S'T'RE'VE'LL'D'M",
        "\u0000\u0001\u007f\u0080\u009f\ufffd\ue000\U0001d400\U0010fffd",
        "ĠĊĉ", "<|im_start|><|im_end|><think></think><|endoftext|><|begin_of_text|><|eot_id|>",
        "<|im_sta", "\\frac{1}{2}\\sqrt{x}$x^2$\\boxed{}",
    ]
    out = []
    for _ in range(count):
        length = rng.choice([1, 2, 3, 5, 8, 13, 30, 80, 200])
        pieces = []
        while sum(len(p) for p in pieces) < length:
            pool = rng.choice(pools)
            if rng.random() < 0.3:
                pieces.append(pool[rng.randrange(len(pool)):][:rng.randint(1, 12)])
            else:
                pieces.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
        out.append("".join(pieces))
    return out


def corpus(shared):
    texts = []
    for path in sorted(glob.glob(os.path.join(shared, "data", "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                for key in ("problem", "answer", "solution"):
                    if isinstance(record.get(key), str):
                        texts.append(record[key])
    return texts


def encode(microrl, shared):
    data = corpus(shared)
    generated = random_strings(3000, seed=20261126)
    failures = []
    for name in ("qwen3", "llama3"):
        path = os.path.join(shared, "tokenizers", name, "tokenizer.json")
        hf = Tokenizer.from_file(path)
        texts = data + generated
        ours = run_tool(microrl, ["tokenize", f"--tokenizer={path}"], [{"text": t} for t in texts])
        theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
        bad = [i for i in range(len(texts)) if ours[i]["ids"] != theirs[i]]
        for i in bad[:5]:
            failures.append(f"{name} encode: {texts[i]!r}: ours {ours[i]['ids'][:20]} "
                            f"theirs {theirs[i][:20]}")
        decoded = run_tool(microrl, ["detokenize", f"--tokenizer={path}"],
                           [{"ids": ids} for ids in theirs])
        expected = hf.decode_batch(theirs, skip_special_tokens=False)
        bad_decode = [i for i in range(len(texts)) if decoded[i]["text"] != expected[i]]
        for i in bad_decode[:5]:
            failures.append(f"{name} decode: {expected[i]!r} ours {decoded[i]['text']!r}")
        print(f"{name}: {len(texts)} texts ({len(data)} from data, {len(generated)} generated): "
              f"{len(texts) - len(bad)} identical encodings, "
              f"{len(texts) - len(bad_decode)} identical decodings")
    if failures:
        sys.exit("\n".join(failures))


def conversations():
    system = {"role": "system", "content": "You are a careful mathematician."}
    user1 = {"role": "user", "content": "What is $2+2$? Put the answer in \\boxed{}."}
    assistant1 = {"role": "assistant", "content": "<think>\n2 plus 2.\n</think>\n\nIt is \\boxed{4}."}
    user2 = {"role": "user", "content": "  And 3 × 3?  "}
    plain_assistant = {"role": "assistant", "content": "9, «ok» — 😀"}
    tool_call = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calc", "arguments": {"expr": "3*3", "n": 1.5}}}]}
    tool = {"role": "tool", "content": "9"}
    tools = [{"type": "function", "function": {"name": "calc", "description": "Évalue.",
              "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}]
    cases = []
    for gen in (True, False):
        cases.append(("user only", [user1], gen, {}))
        cases.append(("system + user", [system, user1], gen, {}))
        cases.append(("multi-turn", [system, user1, assistant1, user2], gen, {}))
        cases.append(("multi-turn, no system", [user1, plain_assistant, user2, plain_assistant], gen, {}))
        cases.append(("thinking on", [user1, assistant1, user2], gen, {"enable_thinking": True}))
        cases.append(("thinking off", [system, user2], gen, {"enable_thinking": False}))
    cases.append(("tools", [system, user1, tool_call, tool, plain_assistant], True, {"tools": tools}))
    # Llama 3.2's template refuses tools without a user message (raise_exception).
    cases.append(("tools, no user message", [system], True, {"tools": tools}))
    return cases


def chat(microrl, shared):
    from transformers.utils.chat_template_utils import render_jinja_template

    tokenizers_dir = os.path.join(shared, "tokenizers")
    templates = []
    for name in ("qwen3", "llama3"):
        config_path = os.path.join(tokenizers_dir, name, "tokenizer_config.json")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        templates.append((name, config["chat_template"], config,
                          [f"--tokenizer-config={config_path}"]))
    # The .jinja files' models: their special tokens, as their tokenizer_config.json says.
    special = {
        "Qwen-Qwen2.5-7B-Instruct": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": {
            "bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"},
        "meta-llama-Llama-3.2-3B-Instruct": {"bos_token": "<|begin_of_text|>",
                                             "eos_token": "<|eot_id|>"},
    }
    work = tempfile.mkdtemp(prefix="chat_oracle.")
    atexit.register(shutil.rmtree, work, True)
    for path in sorted(glob.glob(os.path.join(shared, "chat_templates", "*.jinja"))):
        name = os.path.basename(path)[:-len(".jinja")]
        with open(path, encoding="utf-8") as f:
            source = f.read()
        config_path = os.path.join(work, name + ".json")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(special[name], f)
        templates.append((name, source, special[name],
                          [f"--template-file={path}", f"--tokenizer-config={config_path}"]))
    failures = []
    for name, source, config, flags in templates:
        tokens = {k: v for k, v in config.items()
                  if k in ("bos_token", "eos_token", "unk_token", "pad_token",
                           "additional_special_tokens") and v is not None}
        requests, expected, labels = [], [], []
        for label, messages, gen, extra in conversations():
            kwargs = dict(tokens)
            kwargs.update(extra)
            tools = kwargs.pop("tools", None)
            try:
                text = render_jinja_template(conversations=[messages], tools=tools,
                                             chat_template=source, add_generation_prompt=gen,
                                             **kwargs)[0][0]
            except Exception as error:  # the template refuses this conversation
                text = f"ERROR {type(error).__name__}"
            request = {"messages": messages, "add_generation_prompt": gen}
            request.update(extra)
            requests.append(request)
            expected.append(text)
            labels.append(f"{label}, generation prompt {gen}")
        ours = []
        for request in requests:  # one call each: a refused conversation ends the tool
            result = subprocess.run([microrl, "render-chat"] + flags,
                                    input=json.dumps(request) + "\n", capture_output=True,
                                    text=True, timeout=60)
            ours.append(json.loads(result.stdout)["text"] if result.returncode == 0
                        else f"ERROR {result.stderr.strip()}")
        same = 0
        for label, want, got in zip(labels, expected, ours):
            if want == got or (want.startswith("ERROR") and got.startswith("ERROR")):
                same += 1
            else:
                failures.append(f"{name} / {label}:\n  transformers {want!r}\n  microrl      {got!r}")
        refused = sum(want.startswith("ERROR") for want in expected)
        print(f"{name}: {same}/{len(expected)} conversations rendered identically "
              f"({refused} refused by both)")
    if failures:
        sys.exit("\n".join(failures[:10]))


# Small templates exercising the Jinja features chat templates use, rendered with
# messages = [user "Hi there", assistant "  Hello!  "] and the variables below.
SNIPPETS = [
    "{{ messages[0].content }}|{{ messages[-1]['content'] }}|{{ messages[5] is defined }}",
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}{% if not loop.last %}, {% endif %}{% endfor %}",
    "{% for m in messages %}{{ loop.index0 }}{{ loop.first }}{{ loop.revindex }}{{ loop.previtem is defined }}{% endfor %}",
    "  {% if true %}\n    yes\n  {% endif %}\n  {{ 'x' }}  \n{# c #}\nend",
    "a  {%- if true -%}  b  {%- endif -%}  c {{- ' d ' -}} e",
    "{%+ if true %}kept{% endif +%}\nnext",
    "{% set ns = namespace(count=0, seen=[]) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}{% endfor %}{{ ns.count }}",
    "{% set x = 1 %}{% for m in messages %}{% set x = x + 10 %}{{ x }}{% endfor %}{{ x }}",
    "{{ messages[::-1] | map(attribute='role') | join(',') }}|{{ messages[1:] | length }}|{{ 'abcdef'[1:4] }}|{{ 'abcdef'[::-2] }}",
    "{{ tools | tojson }}|{{ tools | tojson(indent=2) }}",
    "{{ {'b': 1, 'a': [1, 2.5, none, true, 'é\\n\"'], 'c': {}} | tojson }}",
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 3 * 'ab' }}",
    "{{ none }} {{ true }} {{ [1, 'a', none] }} {{ {'k': 'v'} }} {{ undefined_name }}.",
    "{{ '  x y  '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ '\\nx\\n'.strip('\\n') }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'Hello'.startswith('He') }}|{{ 'Hello'.endswith(('x', 'lo')) }}",
    "{{ 'MiXeD'.lower() }}{{ 'MiXeD'.upper() }}{{ 'hello world'.title() }}{{ 'hello'.capitalize() }}{{ 'a-b-c'.replace('-', '+') }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='content') | first }}",
    "{{ x is none }}{{ x is not none }}{{ 3 is odd }}{{ 4 is divisibleby 2 }}{{ 'a' is string }}{{ messages is iterable }}{{ {} is mapping }}{{ 1 is number }}{{ enable_thinking is false }}",
    "{{ 'a' in 'cat' }}{{ 'x' not in ['x'] }}{{ 'role' in messages[0] }}{{ 1 < 2 < 3 }}{{ 2 == 2.0 }}{{ 'b' > 'a' }}",
    "{{ 'yes' if messages else 'no' }}{{ 'yes' if not messages }}|{{ messages and 'both' }}|{{ none or 'fallback' }}",
    "{{ messages[0].content | trim }}|{{ messages[1].content | trim }}|{{ undefined_name | default('dflt') }}|{{ '' | default('empty', true) }}",
    "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}{% for k in {'x': 1} %}{{ k }}{% endfor %}",
    "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for i in [] %}x{% else %}empty{% endfor %}{% for i in range(4) if i is even %}{{ i }}{% endfor %}",
    "{% set block %}captured {{ 1 + 1 }}{% endset %}[{{ block }}]",
    "{{ 'a' ~ 1 ~ none }}{{ [1, 2] + [3] }}{{ -(3) }}{{ (1, 2) }}",
    "{{ messages | length }}{{ 'héllo' | length }}{{ [3, 1, 2] | sort }}{{ [1, 1, 2] | unique | list }}{{ [1, 2, 3] | sum }}{{ [4, 9] | max }}",
    "{{ '%d' | length }}{{ 'x' * 0 }}{{ 10 | string }}{{ '42' | int + 1 }}{{ '2.5' | float }}{{ -3 | abs }}",
    "{{ messages[0].get('role') }}{{ messages[0].get('missing', 'd') }}{{ messages[0].keys() | list }}",
    "{{ 'é' | upper }}{{ 'ǅ' | lower }}{{ 'ß'.upper() }}",
    "{{ \"multi\" 'ple' }}{{ 'tab\\there' }}{{ '\\u00e9' }}",
    "line1\n{% if true %}\nline2\n{% endif %}\nline3\n",
    "{% if enable_thinking is defined and enable_thinking is false %}off{% elif enable_thinking %}on{% else %}unset{% endif %}",
]


def jinja(microrl):
    from transformers.utils.chat_template_utils import render_jinja_template

    messages = [{"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "  Hello!  "}]
    variables = {"tools": [{"name": "calc", "args": {"x": 1}}], "enable_thinking": False}
    work = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"jinja_oracle_{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    failures = []
    for index, snippet in enumerate(SNIPPETS):
        source = snippet
        kwargs = dict(variables)
        tools = kwargs.pop("tools")
        want = render_jinja_template(conversations=[messages], tools=tools, chat_template=source,
                                     add_generation_prompt=False, **kwargs)[0][0]
        path = os.path.join(work, f"snippet{index}.jinja")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        request = dict(variables, messages=messages)
        result = subprocess.run([microrl, "render-chat", f"--template-file={path}"],
                                input=json.dumps(request) + "\n", capture_output=True,
                                text=True, timeout=60)
        got = json.loads(result.stdout)["text"] if result.returncode == 0 else \
            f"ERROR {result.stderr.strip()}"
        if got != want:
            failures.append(f"snippet {index} {source!r}:\n  jinja2  {want!r}\n  microrl {got!r}")
    print(f"jinja: {len(SNIPPETS) - len(failures)}/{len(SNIPPETS)} snippets rendered identically")
    if failures:
        sys.exit("\n".join(failures))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["encode", "chat", "jinja"])
    parser.add_argument("--microrl", required=True)
    parser.add_argument("--shared", default="")
    args = parser.parse_args()
    if args.command == "encode":
        encode(args.microrl, args.shared)
    elif args.command == "chat":
        chat(args.microrl, args.shared)
    else:
        jinja(args.microrl)


if __name__ == "__main__":
    main()
