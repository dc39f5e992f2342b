"""The rollout server's OpenAI-compatible endpoint, driven by the official `openai` client.

  openai_test.py --rollout_server BIN --source_dir SRC

Makes the CPU demo's model (deploy/demo/make_demo.py: a real Qwen2 model with a chat
template) and a random PEFT LoRA adapter for it, starts rollout_server with --openai_port,
a bearer token and the adapter as version 3, and checks, against the same server's gRPC
Generate where it says so:
  - /v1/models lists the base model and `<name>@v3`; a LoadAdapter push of version 4
    adds `<name>@v4`;
  - completions: greedy text and token log-probs equal gRPC's for the same prompt,
    adapter and seed; usage counts; a list of prompts with n > 1 in order;
  - chat: the prompt is the model's chat template (same tokens as gRPC given the
    rendered prompt); streaming gives the non-streamed text, ends with [DONE] and
    reports usage; n > 1; stop strings end the text before the stop; the same seed
    gives the same samples and another seed other ones;
  - errors in OpenAI's shape: no or a wrong token (401), bad JSON, bad fields and too
    many tokens (400), an unknown model (404), an unknown path (404);
  - 16 HTTP and 16 gRPC requests at once: every answer equals its sequential one.
Exits 1 at the first failed check.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
import service_process  # noqa: E402
from checks import require  # noqa: E402

TOKEN = "openai-test-token-0123456789"


def raw_post(base, path, body, token=TOKEN, data=None):
    """POST without the client: (status, parsed JSON or text)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data if data is not None else
                                 json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        try:
            return e.code, json.loads(text)
        except json.JSONDecodeError:
            return e.code, text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollout_server", required=True)
    parser.add_argument("--source_dir", required=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="openai_test_") as work:
        subprocess.run([sys.executable,
                        os.path.join(args.source_dir, "deploy", "demo", "make_demo.py"),
                        "--out", work, "--sft", "50", "--test", "8"],
                       check=True, stdout=subprocess.DEVNULL)
        model_dir = os.path.join(work, "model")
        service_process.generate_stubs(args.source_dir, work)
        import grpc
        import torch
        from openai import OpenAI
        import openai as openai_module
        from peft import LoraConfig, get_peft_model
        from proto import rollout_pb2, rollout_pb2_grpc
        from transformers import AutoModelForCausalLM

        # Two random adapters (B not zero, so they change the outputs).
        adapters = os.path.join(work, "adapters")
        for version, seed in ((3, 1), (4, 2)):
            torch.manual_seed(seed)
            base = AutoModelForCausalLM.from_pretrained(model_dir)
            peft_model = get_peft_model(base, LoraConfig(
                r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
            with torch.no_grad():
                for name, p in peft_model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.5)
            peft_model.save_pretrained(os.path.join(adapters, f"v{version}"))

        with open(os.path.join(work, "token"), "w") as f:
            f.write(TOKEN)
        port = service_process.free_port()
        proc, ready = service_process.start(
            args.rollout_server, work, "rollout_server",
            [f"--model={model_dir}", f"--openai_port={port}", "--served_model_name=demo",
             f"--auth_token_file={os.path.join(work, 'token')}",
             f"--adapter={os.path.join(adapters, 'v3')}", "--adapter_version=3",
             f"--adapter_dir={adapters}", "--max_model_len=256", "--kv_cache_mb=64"])
        failure = None
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            client = OpenAI(base_url=base_url, api_key=TOKEN, max_retries=0, timeout=60)
            channel = grpc.insecure_channel(f"127.0.0.1:{ready['grpc_port']}")
            stub = rollout_pb2_grpc.RolloutStub(channel)
            metadata = [("authorization", f"Bearer {TOKEN}")]

            def grpc_generate(ids, version, max_tokens, seed=None, temperature=0.0,
                              disable_adapter=False, group=1):
                sampling = rollout_pb2.SamplingParams(temperature=temperature,
                                                      max_tokens=max_tokens)
                if seed is not None:
                    sampling.seed = seed
                request = rollout_pb2.GenerateRequest(
                    prompts=[rollout_pb2.Prompt(token_ids=rollout_pb2.TokenIds(ids=ids))],
                    group_size=group, sampling=sampling, adapter_version=version,
                    disable_adapter=disable_adapter)
                return stub.Generate(request, metadata=metadata, timeout=60).groups[0]

            # Models.
            names = sorted(m.id for m in client.models.list().data)
            require(names == ["demo", "demo@v3"], f"/v1/models lists {names}")

            from tokenizers import Tokenizer
            tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
            prompt = "<|im_start|>user\n12+34=?<|im_end|>\n<|im_start|>assistant\n"
            prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids

            # Completions against gRPC: greedy, with and without the adapter.
            for model, version, disable in (("demo@v3", 3, False), ("demo", 0, True)):
                got = client.completions.create(model=model, prompt=prompt, max_tokens=12,
                                                temperature=0, logprobs=0)
                want = grpc_generate(prompt_ids, version, 12, disable_adapter=disable)
                choice = got.choices[0]
                require(choice.text == want.completions[0].text,
                      f"{model}: completion text equals gRPC's ({choice.text!r})")
                require(choice.logprobs.token_logprobs == list(want.completions[0].logprobs),
                      f"{model}: the token log-probs equal gRPC's exactly")
                require(got.usage.prompt_tokens == len(prompt_ids) and
                      got.usage.completion_tokens == len(want.completions[0].token_ids),
                      f"{model}: usage {got.usage.prompt_tokens} + "
                      f"{got.usage.completion_tokens} tokens")
            plain = client.completions.create(model="demo", prompt=prompt, max_tokens=12,
                                              temperature=0)
            adapted = client.completions.create(model="demo@v3", prompt=prompt,
                                                max_tokens=12, temperature=0, logprobs=0)
            require(plain.choices[0].logprobs is None, "no log-probs unless asked")

            # Several prompts with n > 1: choices in prompt-major order.
            many = client.completions.create(model="demo@v3", prompt=[prompt, "7+8=?"],
                                             max_tokens=6, n=3, temperature=1.0, seed=5)
            require([c.index for c in many.choices] == list(range(6)),
                  "2 prompts x n=3 give 6 choices, in order")
            require(many.usage.prompt_tokens ==
                  len(prompt_ids) + len(tokenizer.encode("7+8=?").ids),
                  f"usage counts each prompt once ({many.usage.prompt_tokens} tokens)")
            # The engine seeds prompt p with seed + p: request 2's first prompt is seed 5's
            # second one, so compare against a gRPC request of prompt 2 alone with
            # first_prompt_index 1.
            request = rollout_pb2.GenerateRequest(
                prompts=[rollout_pb2.Prompt(token_ids=rollout_pb2.TokenIds(
                    ids=tokenizer.encode("7+8=?").ids))],
                group_size=3, adapter_version=3,
                sampling=rollout_pb2.SamplingParams(temperature=1.0, max_tokens=6, seed=5,
                                                    first_prompt_index=1))
            second = stub.Generate(request, metadata=metadata, timeout=60).groups[0]
            require([c.text for c in many.choices[3:]] ==
                  [c.text for c in second.completions],
                  "the second prompt's samples equal gRPC's for the same seed")

            # Chat.
            messages = [{"role": "user", "content": "12+34=?"}]
            chat = client.chat.completions.create(model="demo@v3", messages=messages,
                                                  max_tokens=12, temperature=0,
                                                  logprobs=True)
            require(chat.choices[0].message.role == "assistant" and
                  chat.choices[0].message.content == adapted.choices[0].text,
                  "chat renders the model's chat template (same text as the completion "
                  "of the rendered prompt)")
            require([t.logprob for t in chat.choices[0].logprobs.content] ==
                  adapted.choices[0].logprobs.token_logprobs,
                  "chat log-probs equal the completion's")
            require(chat.usage.prompt_tokens == len(prompt_ids), "chat usage counts the "
                  f"templated prompt ({chat.usage.prompt_tokens} tokens)")

            # Top log-probs against transformers + PEFT scoring the same tokens.
            from peft import PeftModel
            oracle = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                os.path.join(adapters, "v3")).eval()
            tops = client.chat.completions.create(
                model="demo@v3", messages=messages, max_tokens=12, temperature=0,
                logprobs=True, top_logprobs=5)
            ids = list(grpc_generate(prompt_ids, 3, 12).completions[0].token_ids)
            with torch.no_grad():
                logits = oracle(input_ids=torch.tensor([prompt_ids + ids])).logits[0]
            reference = torch.log_softmax(logits[len(prompt_ids) - 1:-1].float(), -1)
            worst = 0.0
            content = tops.choices[0].logprobs.content
            require(len(content) == len(ids) and all(len(t.top_logprobs) == 5 for t in content),
                  "chat top_logprobs: 5 alternatives per token")
            for i, token in enumerate(content):
                want = reference[i].topk(5).values.tolist()
                got = [alt.logprob for alt in token.top_logprobs]
                worst = max([worst] + [abs(a - b) for a, b in zip(got, want)])
                require(got == sorted(got, reverse=True) and
                      token.top_logprobs[0].logprob == token.logprob,
                      f"token {i}: alternatives most likely first, the greedy token first")
            require(worst < 1e-4, f"the top-5 log-probs equal transformers + PEFT's "
                  f"(max |diff| {worst:.1e})")
            legacy = client.completions.create(model="demo@v3", prompt=prompt, max_tokens=12,
                                               temperature=0, logprobs=3)
            require(all(len(d) <= 4 and max(d.values()) == lp for d, lp in zip(
                legacy.choices[0].logprobs.top_logprobs,
                legacy.choices[0].logprobs.token_logprobs)),
                  "completions' logprobs=3: a dict of the sampled token and up to 3 "
                  "alternatives per token, the greedy token's the likeliest")

            # Streaming.
            pieces, finish, usage = [], None, None
            for event in client.chat.completions.create(
                    model="demo@v3", messages=messages, max_tokens=12, temperature=0,
                    stream=True, stream_options={"include_usage": True}):
                if event.usage is not None:
                    usage = event.usage
                for c in event.choices:
                    if c.delta.content:
                        pieces.append(c.delta.content)
                    if c.finish_reason:
                        finish = c.finish_reason
            require("".join(pieces) == chat.choices[0].message.content and
                  finish == chat.choices[0].finish_reason,
                  f"the chat stream joins to the whole answer in {len(pieces)} pieces, "
                  f"finish {finish!r}")
            require(usage is not None and usage.completion_tokens == chat.usage.completion_tokens,
                  "the stream's last event reports usage")
            streamed = "".join(c.choices[0].text for c in client.completions.create(
                model="demo", prompt=prompt, max_tokens=12, temperature=0, stream=True))
            require(streamed == plain.choices[0].text, "a completion stream joins to the "
                  "whole completion")

            # n > 1, seeds, stop.
            a = client.chat.completions.create(model="demo@v3", messages=messages,
                                               max_tokens=10, n=4, seed=11)
            b = client.chat.completions.create(model="demo@v3", messages=messages,
                                               max_tokens=10, n=4, seed=11)
            c = client.chat.completions.create(model="demo@v3", messages=messages,
                                               max_tokens=10, n=4, seed=12)
            texts = lambda r: [x.message.content for x in r.choices]  # noqa: E731
            require(len(a.choices) == 4, "n=4 gives 4 choices")
            require(texts(a) == texts(b), "the same seed gives the same 4 samples")
            require(texts(a) != texts(c), "another seed gives other samples")
            full = adapted.choices[0].text
            if len(full) >= 3:
                stop = full[1:3]
                stopped = client.completions.create(model="demo@v3", prompt=prompt,
                                                    max_tokens=12, temperature=0, stop=[stop])
                require(stopped.choices[0].text == full[:full.index(stop)] and
                      stopped.choices[0].finish_reason == "stop",
                      f"stop {stop!r} ends the text before it "
                      f"({stopped.choices[0].text!r})")
                streamed = "".join(e.choices[0].text for e in client.completions.create(
                    model="demo@v3", prompt=prompt, max_tokens=12, temperature=0,
                    stop=[stop], stream=True))
                require(streamed == stopped.choices[0].text,
                      "streamed with the stop string: nothing after it was sent")

            # A pushed adapter becomes a model.
            header = rollout_pb2.AdapterHeader(version=4, path="v4", keep_versions=2)
            stub.LoadAdapter(iter([rollout_pb2.LoadAdapterRequest(header=header)]),
                             metadata=metadata, timeout=60)
            names = sorted(m.id for m in client.models.list().data)
            require(names == ["demo", "demo@v3", "demo@v4"],
                  f"after LoadAdapter of version 4: {names}")
            v4 = client.completions.create(model="demo@v4", prompt=prompt, max_tokens=12,
                                           temperature=0)
            want = grpc_generate(prompt_ids, 4, 12)
            require(v4.choices[0].text == want.completions[0].text,
                  "demo@v4 generates with version 4")

            # Errors.
            def error_of(call):
                try:
                    call()
                except openai_module.APIStatusError as e:
                    return e.status_code, e.body
                return None, None
            status, _ = error_of(lambda: OpenAI(base_url=base_url, api_key="wrong-token",
                                                max_retries=0).models.list())
            require(status == 401, f"a wrong token: {status}")
            status, body = raw_post(base_url, "/completions", {"model": "demo",
                                                               "prompt": "1"}, token=None)
            require(status == 401 and body["error"]["type"] == "authentication_error",
                  f"no token: {status} {body}")
            status, body = raw_post(base_url, "/completions", None, data=b"{not json")
            require(status == 400 and "JSON" in body["error"]["message"],
                  f"bad JSON: {status} {body}")
            status, body = error_of(lambda: client.completions.create(
                model="nope", prompt=prompt, max_tokens=2))
            require(status == 404 and body["code"] == "model_not_found",
                  f"an unknown model: {status} {body}")
            status, body = error_of(lambda: client.completions.create(
                model="demo", prompt=prompt, max_tokens=5000))
            require(status == 400, f"too many tokens: {status} {body}")
            status, body = error_of(lambda: client.completions.create(
                model="demo", prompt=prompt, max_tokens=2, temperature=-1))
            require(status == 400 and body["param"] == "temperature",
                  f"a bad temperature: {status} {body}")
            status, body = raw_post(base_url, "/chat/completions",
                                    {"model": "demo", "messages": "hi"})
            require(status == 400 and body["error"]["param"] == "messages",
                  f"bad messages: {status} {body}")
            for hostile in ({"model": "demo", "prompt": [-1]},
                            {"model": "demo", "prompt": [99999999999]},
                            {"model": "demo", "prompt": [[]]},
                            {"model": "demo", "prompt": {"a": 1}},
                            {"model": 7, "prompt": "1"},
                            {"model": "demo", "prompt": "1", "n": 0},
                            {"model": "demo", "prompt": "1", "stop": [1]},
                            {"model": "demo", "prompt": "1", "stream_options": {
                                "include_usage": "yes"}},
                            {"model": "demo", "prompt": "1", "logprobs": 6},
                            {"model": "demo", "prompt": "1", "top_p": 0},
                            {"model": "demo", "prompt": "1", "presence_penalty": 0.5},
                            {"model": "demo", "prompt": "1", "logit_bias": {"5": 10}},
                            {"model": "demo", "prompt": "1", "echo": True},
                            {"model": "demo", "prompt": "1", "best_of": 3},
                            {"model": "demo", "prompt": "1", "response_format": {
                                "type": None}}):
                status, body = raw_post(base_url, "/completions", hostile)
                require(status == 400 and body["error"]["type"] == "invalid_request_error",
                      f"{json.dumps(hostile)}: {status} {body['error']['message']!r}")
            status, body = raw_post(base_url, "/chat/completions", {
                "model": "demo", "max_tokens": 2, "temperature": 0,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "12+"},
                                                          {"type": "text", "text": "34=?"}]}]})
            require(status == 200 and body["choices"][0]["message"]["content"] ==
                  raw_post(base_url, "/chat/completions", {
                      "model": "demo", "max_tokens": 2, "temperature": 0,
                      "messages": [{"role": "user", "content": "12+34=?"}]})[1]
                  ["choices"][0]["message"]["content"],
                  "content as text parts reads as their joined text")
            deep = ('{"model": "demo", "messages": [{"role": "user", "content": "1", "x": '
                    + "[" * 200000 + "]" * 200000 + "}]}")
            status, body = raw_post(base_url, "/chat/completions", None, data=deep.encode())
            require(status == 400 and "nests deeper" in body["error"]["message"],
                  f"a body nested 200,000 deep: {status} {body['error']['message']!r}")
            status, body = raw_post(base_url, "/chat/completions", {
                "model": "demo", "messages": [{"role": "user",
                                               "content": [{"type": 1, "text": "x"}]}]})
            require(status == 400 and body["error"]["param"] == "messages",
                  f"a content part of type 1: {status}")
            status, body = raw_post(base_url, "/nothing", {"model": "demo"})
            require(status == 404 and "error" in body, f"an unknown path: {status}")

            # Sleeping: 503 with Retry-After, then served again after Wake.
            stub.Sleep(rollout_pb2.SleepRequest(), metadata=metadata, timeout=60)
            req = urllib.request.Request(
                base_url + "/completions", method="POST",
                data=json.dumps({"model": "demo", "prompt": "1+1=?",
                                 "max_tokens": 2}).encode(),
                headers={"Authorization": f"Bearer {TOKEN}",
                         "Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=60)
                status, retry_after = 200, None
            except urllib.error.HTTPError as e:
                status, retry_after = e.code, e.headers.get("Retry-After")
            require(status == 503 and retry_after is not None,
                  f"while sleeping: {status}, Retry-After {retry_after}")
            status, body = raw_post(base_url, "/completions", {
                "model": "demo", "prompt": "1+1=?", "max_tokens": 2, "stream": True})
            require(status == 503 and body["error"]["code"] == "unavailable",
                  f"a stream while sleeping: {status}")
            stub.Wake(rollout_pb2.WakeRequest(), metadata=metadata, timeout=60)
            require(client.completions.create(model="demo", prompt="1+1=?", max_tokens=2)
                  .choices[0].finish_reason in ("stop", "length"), "served again after Wake")

            # HTTP and gRPC at once.
            def via_http(i):
                return client.completions.create(
                    model="demo@v3", prompt=f"{i}+{i}=?", max_tokens=8,
                    temperature=0).choices[0].text

            def via_grpc(i):
                return grpc_generate(tokenizer.encode(f"{i}+{i}=?").ids, 3,
                                     8).completions[0].text
            expected_http = [via_http(i) for i in range(16)]
            expected_grpc = [via_grpc(i) for i in range(16)]
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                http = [pool.submit(via_http, i) for i in range(16)]
                grpc_calls = [pool.submit(via_grpc, i) for i in range(16)]
                got_http = [f.result() for f in http]
                got_grpc = [f.result() for f in grpc_calls]
            require(got_http == expected_http and got_grpc == expected_grpc
                  and expected_http == expected_grpc,
                  "16 HTTP and 16 gRPC requests at once: every answer as when run alone")
        finally:
            failure = service_process.stop(proc, "rollout_server")
        require(failure is None, f"rollout_server stops cleanly on SIGTERM ({failure})")

        # TLS: the endpoint takes the gRPC server's certificate and token.
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
        from security_test import make_certificates
        import httpx
        certs_dir = os.path.join(work, "certs")
        os.makedirs(certs_dir)
        certs = make_certificates(certs_dir)
        port = service_process.free_port()
        proc, ready = service_process.start(
            args.rollout_server, work, "rollout_server_tls",
            [f"--model={model_dir}", f"--openai_port={port}",
             f"--auth_token_file={os.path.join(work, 'token')}",
             f"--tls_cert={certs['server.pem']}", f"--tls_key={certs['server.key']}",
             "--max_model_len=256", "--kv_cache_mb=64"])
        try:
            secure = OpenAI(base_url=f"https://localhost:{port}/v1", api_key=TOKEN,
                            max_retries=0, timeout=60,
                            http_client=httpx.Client(verify=certs["ca.pem"]))
            names = [m.id for m in secure.models.list().data]
            require(names == ["model"], f"over TLS, /v1/models lists {names} (the directory's "
                  "name)")
            text = secure.completions.create(model="model", prompt="1+2=?", max_tokens=3,
                                             temperature=0).choices[0].text
            require(isinstance(text, str), "a completion over TLS")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10)
                plain_refused = False
            except Exception:  # noqa: BLE001 - any failure is the refusal
                plain_refused = True
            require(plain_refused, "plain HTTP to the TLS endpoint gets no answer")
        finally:
            failure = service_process.stop(proc, "rollout_server_tls")
        require(failure is None, f"the TLS server stops cleanly ({failure})")
    print("openai endpoint: all checks passed")


if __name__ == "__main__":
    main()
