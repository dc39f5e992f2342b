"""The rollout_server binary over gRPC, against transformers and PEFT.

A tiny Qwen2 model with random weights (transformers) and the real Qwen3 tokenizer, and
two LoRA adapters made by PEFT, are written to a temporary directory; two servers run on
loopback. Checked:
  - returned log-probs equal log_softmax(logits / T) of transformers (and of PEFT with an
    adapter) on the full sequence, within 1e-4; greedy tokens are transformers' argmax;
  - text prompts are tokenized as `tokenizers` does, completion text is its decoding;
  - an adapter pushed over the stream (and one loaded by path) generates exactly as the
    same adapter loaded at start-up by a second server;
  - bad adapters are refused with INVALID_ARGUMENT (or FAILED_PRECONDITION for an old
    version) and the previous adapter keeps serving;
  - bad requests get INVALID_ARGUMENT with a message; stop strings; sleep/wake; a call
    past its deadline frees its sequences; /metrics.

  rollout_server_test.py --rollout_server BIN --source_dir REPO --shared SHARED_DIR
"""
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import FAILURES, check, finish  # noqa: E402
from service_process import generate_stubs, required_args, start, stop  # noqa: E402
from tiny_model import EOS, VOCAB, make_tiny_qwen2  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(model, out_dir, rank, targets, seed):
    """A PEFT adapter with non-zero B, saved by PEFT; returns the PEFT model."""
    import copy
    from peft import LoraConfig, get_peft_model
    peft_model = get_peft_model(copy.deepcopy(model),
                                LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    peft_model.save_pretrained(out_dir)
    return peft_model.eval()


def oracle_logprobs(model, prompt, tokens, temperature):
    """log_softmax(logits / T) of each completion token, and the logits, from one
    full-sequence forward of transformers (or PEFT)."""
    ids = torch.tensor([list(prompt) + list(tokens)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    scaled = logits / (temperature if temperature > 0 else 1.0)
    logprobs = torch.log_softmax(scaled, -1).gather(1, torch.tensor(tokens).unsqueeze(1))
    return logprobs.squeeze(1), logits


def check_against_oracle(model, prompt, completion, temperature, what):
    tokens = list(completion.token_ids)
    check(len(tokens) == len(completion.logprobs) > 0, f"{what}: tokens and logprobs")
    expected, logits = oracle_logprobs(model, prompt, tokens, temperature)
    got = torch.tensor(list(completion.logprobs))
    diff = (got - expected).abs().max().item()
    check(diff <= 1e-4, f"{what}: logprobs differ from the oracle by {diff}")
    if temperature == 0:
        for t, token in enumerate(tokens):
            best = logits[t].max().item()
            # The argmax, or tied with it within float noise.
            check(logits[t, token].item() >= best - 1e-4,
                  f"{what}: token {t} = {token} is not transformers' argmax "
                  f"{logits[t].argmax().item()}")


def expect_error(call, code, substring, what):
    try:
        call()
    except grpc.RpcError as error:
        check(error.code() == code, f"{what}: {error.code()} ({error.details()}), want {code}")
        check(substring in (error.details() or ""),
              f"{what}: message {error.details()!r} lacks {substring!r}")
        return
    check(False, f"{what}: accepted")


def main():
    args = required_args("rollout_server", "source_dir", "shared")

    with tempfile.TemporaryDirectory() as work:
        generate_stubs(args.source_dir, work)
        from proto import common_pb2, rollout_pb2, rollout_pb2_grpc  # noqa: E402
        import tokenizers

        model_dir = os.path.join(work, "model")
        adapters = os.path.join(work, "adapters")
        model = make_tiny_qwen2(model_dir, args.shared)
        peft_v1 = make_adapter(model, os.path.join(adapters, "v1"), 4, TARGETS, seed=1)
        peft_v2 = make_adapter(model, os.path.join(adapters, "v2"), 8, ["q_proj", "down_proj"],
                               seed=2)
        tokenizer = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))

        common = [f"--model={model_dir}", "--kv_cache_mb=16", "--max_model_len=256"]
        running = []
        try:
            server, ready = start(args.rollout_server, work, "rollout_a",
                                  common + [f"--adapter_dir={adapters}"])
            running.append((server, "rollout_a"))
            startup, startup_ready = start(
                args.rollout_server, work, "rollout_b",
                common + [f"--adapter={os.path.join(adapters, 'v1')}", "--adapter_version=1",
                          "--cpu_threads=1"])
            running.append((startup, "rollout_b"))
            stub = rollout_pb2_grpc.RolloutStub(
                grpc.insecure_channel(f"127.0.0.1:{ready['grpc_port']}"))
            startup_stub = rollout_pb2_grpc.RolloutStub(
                grpc.insecure_channel(f"127.0.0.1:{startup_ready['grpc_port']}"))

            def info(s=stub):
                return s.GetInfo(common_pb2.GetInfoRequest(), timeout=10)

            def generate(prompts, group_size=1, timeout=120, s=stub, **kwargs):
                sampling = rollout_pb2.SamplingParams(
                    **{k: v for k, v in kwargs.items()
                       if k in ("temperature", "top_p", "top_k", "max_tokens", "stop",
                                "stop_token_ids", "ignore_eos", "seed")})
                request = rollout_pb2.GenerateRequest(
                    prompts=[rollout_pb2.Prompt(text=p) if isinstance(p, str) else
                             rollout_pb2.Prompt(token_ids=rollout_pb2.TokenIds(ids=p))
                             for p in prompts],
                    group_size=group_size, sampling=sampling,
                    **{k: v for k, v in kwargs.items()
                       if k in ("wait_if_sleeping", "disable_adapter", "min_adapter_version")})
                return s.Generate(request, timeout=timeout)

            # ---- GetInfo
            i = info()
            check(i.state == rollout_pb2.ROLLOUT_STATE_READY, f"state {i.state}")
            check(i.architecture == "Qwen2ForCausalLM", f"architecture {i.architecture}")
            check(i.dtype == "float32" and i.device == "cpu", f"{i.dtype} {i.device}")
            check(i.vocab_size == VOCAB and i.max_model_len == 256, f"{i.vocab_size} {i.max_model_len}")
            check(list(i.eos_token_ids) == [EOS], f"eos {list(i.eos_token_ids)}")
            check(i.adapter_version == 0 and i.kv_cache_bytes > 0, f"{i}")
            check(info(startup_stub).adapter_version == 1, "start-up adapter version")
            # Intra-op threads: as asked, or by the model's size (this one's Qwen vocabulary
            # makes a token cost more than the 4M multiply-adds under which one is used).
            c = model.config
            macs = c.num_hidden_layers * (
                2 * c.hidden_size * c.num_attention_heads * (c.hidden_size // c.num_attention_heads)
                + 2 * c.hidden_size * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
                + 3 * c.hidden_size * c.intermediate_size) + c.vocab_size * c.hidden_size
            logs = {name: open(os.path.join(work, name + ".log")).read()
                    for name in ("rollout_a", "rollout_b")}
            check("CPU intra-op threads: 1 (--cpu_threads)" in logs["rollout_b"],
                  "--cpu_threads=1 not applied")
            check(f"(auto: {macs} multiply-adds per token)" in logs["rollout_a"]
                  and macs >= 4_000_000, f"automatic threads for {macs} multiply-adds")
            # A negative count is refused with the other flag checks, before any model is
            # read (this directory does not exist).
            out = subprocess.run([args.rollout_server, "--port=0", "--metrics_port=0",
                                  f"--model={os.path.join(work, 'no_such_model')}",
                                  "--cpu_threads=-1"],
                                 capture_output=True, text=True, timeout=60)
            check(out.returncode == 2 and "--cpu_threads" in out.stderr
                  and "no_such_model" not in out.stderr,
                  f"--cpu_threads=-1 refused before loading: {out.returncode} {out.stderr[-300:]}")
            # Adapters on the CPU run merged into a copy of the base weights (the log-probs
            # above and below are checked against PEFT with them so).
            check("adapters run merged into a copy of the base weights" in logs["rollout_b"],
                  "--merge_adapter's default not in effect")

            # ---- text prompts and text
            text = "Solve: what is 17 * 23? Think step by step."
            r = generate([text], group_size=2, temperature=0.0, max_tokens=8, ignore_eos=True)
            group = r.groups[0]
            check(list(group.prompt_token_ids) == tokenizer.encode(text, add_special_tokens=False).ids,
                  "prompt tokenization differs from tokenizers")
            for c in group.completions:
                check(c.text == tokenizer.decode(list(c.token_ids), skip_special_tokens=True),
                      f"completion text {c.text!r}")
                check(c.finish_reason == rollout_pb2.FINISH_REASON_LENGTH and c.completion_tokens == 8,
                      f"finish {c.finish_reason} tokens {c.completion_tokens}")
                check_against_oracle(model, group.prompt_token_ids, c, 0.0, "greedy text prompt")

            # ---- base model: log-probs and greedy against transformers
            prompts = [[151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30],
                       [9707, 11, 1879],
                       [785, 4226, 374, 220, 19, 13, 576, 1429, 315, 279, 1156, 220, 20, 49433]]
            for temperature in (0.0, 0.8):
                r = generate(prompts, group_size=3, temperature=temperature, max_tokens=12,
                             seed=5, ignore_eos=True)
                for p, group in enumerate(r.groups):
                    check(group.prompt_tokens == len(prompts[p]), "prompt_tokens")
                    for c in group.completions:
                        check(c.adapter_version == 0, "base adapter version")
                        check_against_oracle(model, prompts[p], c, temperature,
                                             f"base T={temperature} prompt {p}")

            # ---- seeds
            a = generate(prompts, group_size=2, temperature=1.0, max_tokens=10, seed=42)
            b = generate(prompts, group_size=2, temperature=1.0, max_tokens=10, seed=42)
            c = generate(prompts, group_size=2, temperature=1.0, max_tokens=10, seed=43)
            tokens = lambda resp: [list(x.token_ids) for g in resp.groups for x in g.completions]
            check(tokens(a) == tokens(b), "same seed, different completions")
            check(tokens(a) != tokens(c), "different seeds, same completions")

            # ---- push v1 over the stream; it must generate as the start-up v1 does
            with open(os.path.join(adapters, "v1", "adapter_model.safetensors"), "rb") as f:
                v1_bytes = f.read()
            with open(os.path.join(adapters, "v1", "adapter_config.json")) as f:
                v1_config = f.read()

            def stream(version, data, config_json, sha=None, total=None, chunk=1000):
                yield rollout_pb2.LoadAdapterRequest(header=rollout_pb2.AdapterHeader(
                    version=version, adapter_config_json=config_json,
                    total_bytes=len(data) if total is None else total,
                    sha256=hashlib.sha256(data).hexdigest() if sha is None else sha))
                for start_byte in range(0, len(data), chunk):
                    yield rollout_pb2.LoadAdapterRequest(
                        safetensors_chunk=data[start_byte:start_byte + chunk])

            loaded = stub.LoadAdapter(stream(1, v1_bytes, v1_config), timeout=60)
            check(loaded.version == 1 and loaded.rank == 4, f"{loaded}")
            check(sorted(loaded.target_modules) == sorted(TARGETS), f"{loaded.target_modules}")
            check(loaded.bytes_received == len(v1_bytes), "bytes_received")
            check(loaded.swap_seconds > 0, "swap_seconds")
            pushed = generate(prompts, group_size=2, temperature=1.0, max_tokens=10, seed=7,
                              min_adapter_version=1)
            at_start = generate(prompts, group_size=2, temperature=1.0, max_tokens=10, seed=7,
                                s=startup_stub)
            check(tokens(pushed) == tokens(at_start),
                  "a pushed adapter generates differently from the same adapter at start-up")
            for gp, gs in zip(pushed.groups, at_start.groups):
                for cp, cs in zip(gp.completions, gs.completions):
                    check(list(cp.logprobs) == list(cs.logprobs), "logprobs differ from start-up")
            check(tokens(pushed) != tokens(a) or True, "")
            for p, group in enumerate(pushed.groups):
                for c in group.completions:
                    check(c.adapter_version == 1, "adapter version 1")
                    check_against_oracle(peft_v1, prompts[p], c, 1.0, f"PEFT v1 prompt {p}")
            # disable_adapter still serves the base model.
            base = generate(prompts, group_size=2, temperature=1.0, max_tokens=10, seed=42,
                            disable_adapter=True)
            check(tokens(base) == tokens(a), "disable_adapter is not the base model")

            # ---- v2 by path
            loaded = stub.LoadAdapter(iter([rollout_pb2.LoadAdapterRequest(
                header=rollout_pb2.AdapterHeader(version=2, path="v2"))]), timeout=60)
            check(loaded.version == 2 and loaded.rank == 8, f"{loaded}")
            v2 = generate(prompts, group_size=2, temperature=0.0, max_tokens=10, ignore_eos=True)
            for p, group in enumerate(v2.groups):
                for c in group.completions:
                    check(c.adapter_version == 2, "adapter version 2")
                    check_against_oracle(peft_v2, prompts[p], c, 0.0, f"PEFT v2 prompt {p}")

            # ---- bad adapters: refused, v2 stays
            from safetensors.torch import load, save
            tensors = load(v1_bytes)
            nan = dict(tensors)
            first = sorted(nan)[0]
            nan[first] = nan[first].clone()
            nan[first][0, 0] = float("nan")
            wrong_shape = dict(tensors)
            wrong_shape[first] = torch.zeros(4, 65)
            bad = [
                ("old version", stream(2, v1_bytes, v1_config), grpc.StatusCode.FAILED_PRECONDITION,
                 "not above the loaded version"),
                # Refused on its header, before its bytes are read, parsed or merged.
                ("old version, bad bytes", stream(2, b"not safetensors at all", v1_config),
                 grpc.StatusCode.FAILED_PRECONDITION, "not above the loaded version"),
                ("NaN", stream(3, save(nan), v1_config), grpc.StatusCode.INVALID_ARGUMENT,
                 "non-finite"),
                ("shape", stream(3, save(wrong_shape), v1_config),
                 grpc.StatusCode.INVALID_ARGUMENT, "do not fit"),
                ("rank", stream(3, v1_bytes, v1_config.replace('"r": 4', '"r": 8')),
                 grpc.StatusCode.INVALID_ARGUMENT, "rank"),
                ("sha", stream(3, v1_bytes, v1_config, sha="00" * 32),
                 grpc.StatusCode.INVALID_ARGUMENT, "SHA-256"),
                ("short", stream(3, v1_bytes, v1_config, total=len(v1_bytes) + 10),
                 grpc.StatusCode.INVALID_ARGUMENT, "stream ended after"),
                ("garbage", stream(3, b"not safetensors at all", v1_config),
                 grpc.StatusCode.INVALID_ARGUMENT, "adapter_model.safetensors"),
                ("no header", iter([rollout_pb2.LoadAdapterRequest(safetensors_chunk=b"x")]),
                 grpc.StatusCode.INVALID_ARGUMENT, "must start with an AdapterHeader"),
                ("escape", iter([rollout_pb2.LoadAdapterRequest(
                    header=rollout_pb2.AdapterHeader(version=3, path="../adapters/v1"))]),
                 grpc.StatusCode.INVALID_ARGUMENT, ".."),
                ("trailer sha", itertools.chain(
                    stream(3, v1_bytes, v1_config, sha=""),
                    [rollout_pb2.LoadAdapterRequest(sha256_trailer="00" * 32)]),
                 grpc.StatusCode.INVALID_ARGUMENT, "SHA-256"),
                ("after trailer", itertools.chain(
                    stream(3, v1_bytes, v1_config, sha=""),
                    [rollout_pb2.LoadAdapterRequest(
                        sha256_trailer=hashlib.sha256(v1_bytes).hexdigest()),
                     rollout_pb2.LoadAdapterRequest(safetensors_chunk=b"x")]),
                 grpc.StatusCode.INVALID_ARGUMENT, "goes on after its sha256_trailer"),
                ("cuda ipc on the cpu", iter([rollout_pb2.LoadAdapterRequest(
                    header=rollout_pb2.AdapterHeader(
                        version=3, adapter_config_json=v1_config,
                        cuda_ipc=rollout_pb2.CudaIpcAdapter(
                            handle=b"h" * 64, bytes=len(v1_bytes), layout_json="{}",
                            device_uuid="00" * 16)))]),
                 grpc.StatusCode.UNIMPLEMENTED, "on the CPU"),  # and GetInfo says so:
                ("cuda ipc and a path", iter([rollout_pb2.LoadAdapterRequest(
                    header=rollout_pb2.AdapterHeader(
                        version=3, adapter_config_json=v1_config, path="v1",
                        cuda_ipc=rollout_pb2.CudaIpcAdapter(handle=b"h")))]),
                 grpc.StatusCode.INVALID_ARGUMENT, "neither path nor total_bytes"),
                ("missing dir", iter([rollout_pb2.LoadAdapterRequest(
                    header=rollout_pb2.AdapterHeader(version=3, path="v9"))]),
                 grpc.StatusCode.INVALID_ARGUMENT, "v9"),
                ("keeping too many", iter([rollout_pb2.LoadAdapterRequest(
                    header=rollout_pb2.AdapterHeader(version=3, path="v1", keep_versions=17))]),
                 grpc.StatusCode.INVALID_ARGUMENT, "keep_versions is 17; at most 16"),
            ]
            check(not info().accepts_cuda_ipc, "a CPU server advertises CUDA IPC")
            for what, requests, code, substring in bad:
                expect_error(lambda: stub.LoadAdapter(requests, timeout=60), code, substring,
                             f"adapter {what}")
            check(info().adapter_version == 2, "a rejected adapter replaced v2")
            check(list(info().resident_adapter_versions) == [2],
                  f"v2 alone is resident: {list(info().resident_adapter_versions)}")
            again = generate(prompts, group_size=2, temperature=0.0, max_tokens=10, ignore_eos=True)
            check(tokens(again) == tokens(v2), "generation changed after rejected adapters")

            # ---- bad requests
            invalid = grpc.StatusCode.INVALID_ARGUMENT
            expect_error(lambda: generate([[]]), invalid, "prompt 0 is empty", "empty prompt")
            expect_error(lambda: generate([[1, VOCAB]]), invalid, "outside the vocabulary",
                         "unknown token")
            expect_error(lambda: generate([[1]], group_size=5000), invalid, "group_size 5000",
                         "huge G")
            expect_error(lambda: generate([[1]], group_size=-1), invalid, "group_size -1",
                         "negative G")
            expect_error(lambda: generate([[1, 2]], max_tokens=255), invalid,
                         "exceeds max_model_len 256", "max_tokens beyond the context")
            expect_error(lambda: generate([[1]], temperature=-1.0), invalid, "temperature",
                         "negative temperature")
            expect_error(lambda: generate([[1]], top_p=0.0), invalid, "top_p", "top_p 0")
            expect_error(lambda: generate([[1]], top_p=1.5), invalid, "top_p", "top_p 1.5")
            expect_error(lambda: stub.Generate(rollout_pb2.GenerateRequest(
                prompts=[rollout_pb2.Prompt(id="x")]), timeout=10), invalid,
                "neither token_ids nor text", "prompt without input")
            expect_error(lambda: generate([]), invalid, "no prompts", "no prompts")

            # ---- stop strings: the text ends before the first match
            free = generate([text], temperature=1.0, max_tokens=24, seed=3, ignore_eos=True)
            full = free.groups[0].completions[0]
            middle = len(full.text) // 2
            stop_string = full.text[middle:middle + 3]
            if stop_string.strip() and "\ufffd" not in stop_string:
                stopped = generate([text], temperature=1.0, max_tokens=24, seed=3,
                                   ignore_eos=True, stop=[stop_string]).groups[0].completions[0]
                check(stopped.finish_reason == rollout_pb2.FINISH_REASON_STOP, "stop string finish")
                check(stopped.stop_reason == stop_string, f"stop_reason {stopped.stop_reason!r}")
                check(stopped.text == full.text[:full.text.index(stop_string)],
                      f"stop text {stopped.text!r} vs {full.text!r}")
                check(list(full.token_ids[:len(stopped.token_ids)]) == list(stopped.token_ids),
                      "stopped tokens are not a prefix")
            else:
                check(False, f"no usable stop string in {full.text!r}")
            # A stop token id.
            stop_id = full.token_ids[5]
            stopped = generate([text], temperature=1.0, max_tokens=24, seed=3, ignore_eos=True,
                               stop_token_ids=[stop_id]).groups[0].completions[0]
            check(list(stopped.token_ids) == list(full.token_ids[:list(full.token_ids).index(stop_id) + 1]),
                  "stop token id")

            # ---- sleep / wake
            kv = info().kv_cache_bytes
            slept = stub.Sleep(rollout_pb2.SleepRequest(), timeout=30)
            check(slept.freed_bytes == kv, f"freed {slept.freed_bytes} of {kv}")
            check(info().state == rollout_pb2.ROLLOUT_STATE_SLEEPING, "state after Sleep")
            check(info().kv_cache_bytes == 0, "kv bytes while asleep")
            expect_error(lambda: generate([[1, 2]]), grpc.StatusCode.UNAVAILABLE, "sleeping",
                         "Generate while asleep")
            waited = {}
            waiter = threading.Thread(target=lambda: waited.update(
                r=generate([[1, 2]], max_tokens=4, wait_if_sleeping=True)))
            waiter.start()
            time.sleep(0.3)
            check(waiter.is_alive(), "wait_if_sleeping did not wait")
            woke = stub.Wake(rollout_pb2.WakeRequest(), timeout=30)
            check(woke.kv_cache_bytes == kv, f"wake reserved {woke.kv_cache_bytes}")
            waiter.join(timeout=60)
            check("r" in waited and len(waited["r"].groups[0].completions[0].token_ids) == 4,
                  "the waiting Generate did not complete after Wake")
            check(waited["r"].queue_seconds >= 0.25, "queue_seconds of the waiting call")

            # ---- a call past its deadline frees its sequences
            expect_error(lambda: generate([[1, 2, 3]], group_size=64, max_tokens=240,
                                          ignore_eos=True, timeout=0.5),
                         grpc.StatusCode.DEADLINE_EXCEEDED, "", "deadline")
            deadline = time.time() + 5
            while info().running_sequences and time.time() < deadline:
                time.sleep(0.02)
            check(info().running_sequences == 0 and info().waiting_sequences == 0,
                  "sequences of a call past its deadline still run")

            # ---- metrics
            metrics = urllib.request.urlopen(
                f"http://127.0.0.1:{ready['metrics_port']}/metrics", timeout=10).read().decode()
            for name in ("microrl_rollout_generated_tokens_total", "microrl_rollout_tokens_per_second",
                         "microrl_rollout_running_sequences 0", "microrl_rollout_adapter_version 2",
                         "microrl_rollout_sleeping 0", "microrl_rollout_prefill_seconds_count",
                         "microrl_rollout_adapter_swap_seconds_count 2",
                         "microrl_rollout_kv_cache_usage_ratio"):
                check(name in metrics, f"/metrics lacks {name}")
        finally:
            errors = [e for e in (stop(p, name) for p, name in running) if e]
            for _, name in running:
                log = os.path.join(work, name + ".log")
                if FAILURES or errors:
                    print(f"--- {name} log:\n" + open(log).read()[-3000:])
        if errors:
            FAILURES.extend(errors)
    finish()


if __name__ == "__main__":
    main()
