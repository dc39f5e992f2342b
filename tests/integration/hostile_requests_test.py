"""Hostile requests (label fuzz): every RPC of the three services gets malformed,
oversized and out-of-range messages, generated from the protos, and must answer each
with a proper status code and keep serving correctly.

For rollout_server (the demo's tiny model, one adapter loaded), reward_service and a
learner without a run, all with --max_message_mb=2:
- raw bytes that are not a valid message (random, truncated valid messages, bad
  varints, wrong wire types) to every method;
- valid messages with fields mutated from their descriptors (negative, huge and NaN
  numbers, empty and 100 KB strings, 100,000-element repeated fields, token ids
  outside the vocabulary, nested messages left empty), with a seed per run;
- a message over the size limit (RESOURCE_EXHAUSTED);
- LoadAdapter streams out of order (chunks first, two headers), longer or shorter than
  announced, or announcing 1 TB.
Every answer must be OK or one of INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE,
RESOURCE_EXHAUSTED, NOT_FOUND, ALREADY_EXISTS, UNIMPLEMENTED (a CUDA IPC header on this
CPU server) or UNAVAILABLE saying the server is asleep; INTERNAL (with no message) only
for bytes gRPC itself cannot parse into the request type. A stall (DEADLINE_EXCEEDED
after 60 s: the rollout server caps a request at 512 completions, so no legal request
takes that long here), a CANCELLED or any other UNAVAILABLE fails the test, as does a
process that exits.
Then floods, all at once: 32 Generate calls against a queue of 8 requests (each answer
OK with every completion well formed, or RESOURCE_EXHAUSTED naming the queue; at least
one of each), 16 Score calls, 4 LoadAdapter streams (OK or RESOURCE_EXHAUSTED), and 8
/metrics clients that never read their answer while other scrapes are served. CUDA IPC
headers claiming impossible offsets and sizes get a proper code.
Afterwards each service is alive, health says SERVING, the adapter loaded last still
serves, and a seeded Generate and a Score return exactly what they returned before.

  hostile_requests_test.py --rollout_server BIN --reward_service BIN --learner BIN
                           --source_dir REPO [--rounds 100] [--seed 0]
"""
import argparse
import math
import os
import random
import sys
import tempfile

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish  # noqa: E402
from service_process import cleanup, generate_stubs, make_demo, start, stop  # noqa: E402

PROPER = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
          grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
          grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND,
          grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.UNIMPLEMENTED}
TIMEOUT = 60  # seconds: no legal request here takes that long


def proper(code, details):
    """A proper answer: a listed code, or UNAVAILABLE because a fuzzed Sleep put the
    rollout server to sleep (never a stall, a cancellation or a dead server)."""
    return code in PROPER or (code == grpc.StatusCode.UNAVAILABLE and
                              ("asleep" in details or "sleeping" in details))


def code_of(call):
    try:
        call()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details() or ""


class Mutator:
    """Random mutations of a protobuf message through its descriptor."""

    def __init__(self, rng, vocab):
        self.rng = rng
        self.vocab = vocab
        self.small = False  # inside 300 repeated messages: no 100 KB strings

    def scalar(self, field):
        r = self.rng
        t = field.type
        F = field
        if t in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
            return r.choice([-1, 0, 1, -2**31, 2**31 - 1, self.vocab, self.vocab + 7,
                             r.randint(-10**6, 10**6)])
        if t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
            return r.choice([-1, 0, 2**63 - 1, -2**63, r.randint(-10**12, 10**12)])
        if t in (F.TYPE_UINT32, F.TYPE_FIXED32):
            return r.choice([0, 1, 2**32 - 1, r.randint(0, 10**6)])
        if t in (F.TYPE_UINT64, F.TYPE_FIXED64):
            return r.choice([0, 1, 2**64 - 1, 2**40, r.randint(0, 10**9)])
        if t in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
            return r.choice([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e-30, 1e30,
                             r.uniform(-5, 5)])
        if t == F.TYPE_BOOL:
            return r.random() < 0.5
        if t == F.TYPE_STRING:
            return r.choice(["", "x" * (100 if self.small else 100_000), "\u0000\uffff<|im_end|>",
                             "../../etc/passwd", "\\boxed{" * 500,
                             "".join(chr(r.randint(32, 0x2fff)) for _ in range(50))])
        if t == F.TYPE_BYTES:
            return bytes(r.getrandbits(8) for _ in range(r.choice([0, 7, 4096])))
        if t == F.TYPE_ENUM:
            return r.choice([v.number for v in field.enum_type.values] + [99])
        return None

    def mutate(self, message, depth=0):
        fields = message.DESCRIPTOR.fields
        for field in self.rng.sample(list(fields), k=min(len(fields), self.rng.randint(1, 3))):
            if field.message_type is not None:
                if field.message_type.GetOptions().map_entry:
                    container = getattr(message, field.name)
                    for _ in range(self.rng.choice([0, 3, 2000])):
                        key = str(self.rng.random())
                        value_field = field.message_type.fields_by_name["value"]
                        if value_field.message_type is None:
                            container[key] = self.scalar(value_field)
                    continue
                if field.is_repeated:
                    container = getattr(message, field.name)
                    if self.rng.random() < 0.3:
                        del container[:]
                    count = self.rng.choice([1, 3, 300])
                    small, self.small = self.small, self.small or count > 3
                    for _ in range(count):
                        child = container.add()
                        if depth < 3:
                            self.mutate(child, depth + 1)
                    self.small = small
                elif depth < 3:
                    self.mutate(getattr(message, field.name), depth + 1)
                else:
                    message.ClearField(field.name)
                continue
            if field.is_repeated:
                container = getattr(message, field.name)
                count = self.rng.choice([0, 1, 5, 100_000])
                del container[:]
                value = self.scalar(field)
                if isinstance(value, (str, bytes)) and len(value) > 1000:
                    count = min(count, 5)  # gigabytes would only test the client
                try:
                    container.extend([value] * count)
                except (TypeError, ValueError):
                    pass
                continue
            try:
                setattr(message, field.name, self.scalar(field))
            except (TypeError, ValueError):
                pass


def raw_inputs(rng, valid):
    """Byte strings that are not valid messages of the method's type (or are, by
    chance: then any proper answer is fine)."""
    out = [b"\xff" * 10, b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
           b"\x08" + b"\x80" * 11, b"\x0f\x00", b"\x12\x05ab"]
    for v in valid:
        if len(v) > 2:
            out.append(v[: rng.randint(1, len(v) - 1)])
    for _ in range(20):
        out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))))
    return out


def main():
    parser = argparse.ArgumentParser()
    for flag in ("rollout_server", "reward_service", "learner", "source_dir"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="microrl_hostile_")
    os.makedirs(os.path.join(work, "stubs"))
    generate_stubs(args.source_dir, os.path.join(work, "stubs"))
    from proto import (common_pb2, health_pb2, health_pb2_grpc, learner_pb2,  # noqa: E402
                       reward_pb2, rollout_pb2, rollout_pb2_grpc)
    make_demo(args.source_dir, os.path.join(work, "demo"), seed=4)
    model = os.path.join(work, "demo", "model")
    procs = []
    try:
        rollout, rready = start(args.rollout_server, work, "rollout_server",
                                [f"--model={model}", "--max_model_len=128",
                                 "--kv_cache_mb=32", "--max_message_mb=2",
                                 "--max_queued_requests=8",
                                 "--max_queued_completions=512"])
        procs.append((rollout, "rollout_server"))
        reward, wready = start(args.reward_service, work, "reward_service",
                               ["--max_message_mb=2"])
        procs.append((reward, "reward_service"))
        learner, lready = start(args.learner, work, "learner",
                                ["--max_message_mb=2", "--rollout_address=",
                                 "--reward_address="])
        procs.append((learner, "learner"))
        channels = {name: grpc.insecure_channel(f"127.0.0.1:{ready['grpc_port']}",
                                                options=[("grpc.max_send_message_length",
                                                          64 << 20)])
                    for name, ready in (("rollout", rready), ("reward", wready),
                                        ("learner", lready))}
        rollout_stub = rollout_pb2_grpc.RolloutStub(channels["rollout"])
        vocab = 320

        # An adapter to keep serving through it all.
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM
        torch.manual_seed(0)
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model), LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        peft_model.save_pretrained(os.path.join(work, "adapter"))
        config_json = open(os.path.join(work, "adapter", "adapter_config.json")).read()
        weights = open(os.path.join(work, "adapter", "adapter_model.safetensors"), "rb").read()

        def adapter_stream(version, header_extra=None, chunks=None):
            header = rollout_pb2.AdapterHeader(version=version,
                                               adapter_config_json=config_json,
                                               total_bytes=len(weights))
            if header_extra:
                for k, v in header_extra.items():
                    setattr(header, k, v)
            yield rollout_pb2.LoadAdapterRequest(header=header)
            for chunk in (chunks if chunks is not None else [weights]):
                yield rollout_pb2.LoadAdapterRequest(safetensors_chunk=chunk)

        rollout_stub.LoadAdapter(adapter_stream(1), timeout=60)

        generate = rollout_pb2.GenerateRequest(
            group_size=2, request_id="baseline",
            sampling=rollout_pb2.SamplingParams(temperature=1.0, top_p=0.9, max_tokens=16,
                                                seed=7),
            prompts=[rollout_pb2.Prompt(id="a", token_ids=rollout_pb2.TokenIds(ids=[1, 40, 41, 42, 2])),
                     rollout_pb2.Prompt(id="b", token_ids=rollout_pb2.TokenIds(ids=[1, 50, 51, 2]))])
        score = reward_pb2.ScoreRequest(items=[
            reward_pb2.ScoreItem(id="1", completion="<think>1+1=2</think>\\boxed{2}",
                                 ground_truth="2"),
            reward_pb2.ScoreItem(id="2", completion="\\boxed{3}", ground_truth="\\frac{6}{2}")])
        reward_score = channels["reward"].unary_unary(
            "/microrl.v1.Reward/Score", request_serializer=reward_pb2.ScoreRequest.SerializeToString,
            response_deserializer=reward_pb2.ScoreResponse.FromString)
        before_generate = rollout_stub.Generate(generate, timeout=60)
        before_score = reward_score(score, timeout=60)

        methods = [
            ("rollout", "/microrl.v1.Rollout/Generate", generate),
            ("rollout", "/microrl.v1.Rollout/Sleep", rollout_pb2.SleepRequest()),
            ("rollout", "/microrl.v1.Rollout/Wake", rollout_pb2.WakeRequest()),
            ("rollout", "/microrl.v1.Rollout/GetInfo", common_pb2.GetInfoRequest()),
            ("reward", "/microrl.v1.Reward/Score", score),
            ("reward", "/microrl.v1.Reward/GetInfo", common_pb2.GetInfoRequest()),
            ("learner", "/microrl.v1.Learner/GetInfo", common_pb2.GetInfoRequest()),
            ("rollout", "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest()),
            ("reward", "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest()),
            ("learner", "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest()),
        ]
        improper = []
        counts = {}
        mutator = Mutator(rng, vocab)
        import time
        for service, path, valid in methods:
            raw = channels[service].unary_unary(path)  # bytes in, bytes out
            sent = 0
            began = time.time()
            for data in raw_inputs(rng, [valid.SerializeToString()]):
                code, details = code_of(lambda: raw(data, timeout=TIMEOUT))
                sent += 1
                # gRPC answers bytes it cannot parse as the request type with
                # INTERNAL and no message, before any handler runs.
                if not proper(code, details) and not (code == grpc.StatusCode.INTERNAL and
                                                      not details):
                    improper.append((path, "raw", code, details[:120]))
            for _ in range(args.rounds if service == "rollout" and "Generate" in path
                           else args.rounds // 3):
                message = type(valid)()
                message.CopyFrom(valid)
                mutator.mutate(message)
                try:
                    data = message.SerializeToString()
                except Exception:  # noqa: BLE001 -- e.g. an enum value proto3 refuses
                    continue
                code, details = code_of(lambda: raw(data, timeout=TIMEOUT))
                sent += 1
                if not proper(code, details):
                    improper.append((path, "mutated", code, details[:120]))
            big = b"\x0a" + b"\xff\xff\xff\x01" + b"\x00" * (3 << 20)
            code, details = code_of(lambda: raw(big, timeout=TIMEOUT))
            sent += 1
            if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                improper.append((path, "oversized", code, details[:120]))
            counts[path] = sent
            print(f"{path}: {sent} requests in {time.time() - began:.1f} s", flush=True)
        rollout_stub.Wake(rollout_pb2.WakeRequest(), timeout=30)  # a fuzzed Sleep

        # LoadAdapter streams out of order or lying about their size.
        def bad_stream(kind):
            if kind == "chunk first":
                yield rollout_pb2.LoadAdapterRequest(safetensors_chunk=weights[:100])
            yield from adapter_stream(
                50, {"total_bytes": 1 << 40} if kind == "1 TB" else None,
                {"short": [weights[:-10]], "long": [weights, b"extra"],
                 "two headers": None, "chunk first": None, "1 TB": [weights[:10]],
                 "empty config": [weights]}[kind])
            if kind == "two headers":
                yield rollout_pb2.LoadAdapterRequest(header=rollout_pb2.AdapterHeader(version=51))
        for kind in ("chunk first", "short", "long", "two headers", "1 TB"):
            code, details = code_of(lambda: rollout_stub.LoadAdapter(bad_stream(kind),
                                                                     timeout=30))
            check(code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
                           grpc.StatusCode.RESOURCE_EXHAUSTED),
                  f"LoadAdapter stream '{kind}' refused: {code} {details[:100]}")
        for mutation in range(args.rounds // 3):
            header = rollout_pb2.AdapterHeader()
            mutator.mutate(header)
            code, details = code_of(lambda: rollout_stub.LoadAdapter(iter(
                [rollout_pb2.LoadAdapterRequest(header=header),
                 rollout_pb2.LoadAdapterRequest(safetensors_chunk=weights[:1000])]), timeout=TIMEOUT))
            if not proper(code, details):
                improper.append(("/microrl.v1.Rollout/LoadAdapter", "mutated", code,
                                 details[:120]))

        # CUDA IPC headers claiming what no allocation holds.
        for offset, size in ((2**64 - 1, 2**64 - 1), (0, 2**62), (2**62, 1), (0, 0)):
            header = rollout_pb2.AdapterHeader(version=60, adapter_config_json=config_json)
            header.cuda_ipc.handle = b"\x00" * 64
            header.cuda_ipc.offset = offset
            header.cuda_ipc.bytes = size
            header.cuda_ipc.layout_json = "{}"
            code, details = code_of(lambda: rollout_stub.LoadAdapter(
                iter([rollout_pb2.LoadAdapterRequest(header=header)]), timeout=TIMEOUT))
            if not proper(code, details):
                improper.append(("/microrl.v1.Rollout/LoadAdapter", f"ipc {offset} {size}",
                                 code, details[:120]))

        check(not improper, f"every answer had a proper status code ({sum(counts.values())} "
                            f"requests over {len(counts)} methods); improper: {improper[:8]}")

        # Floods, all at once.
        import socket
        import threading
        import urllib.request
        results = {"generate": [], "score": [], "load": [], "scrape": []}
        lock = threading.Lock()

        def record(kind, value):
            with lock:
                results[kind].append(value)

        def flood_generate(i):
            request = rollout_pb2.GenerateRequest()
            request.CopyFrom(generate)
            request.group_size = 16
            request.sampling.max_tokens = 64
            request.sampling.seed = i
            try:
                reply = rollout_stub.Generate(request, timeout=TIMEOUT)
                ok = len(reply.groups) == 2 and all(
                    len(g.completions) == 16 and all(
                        0 < len(c.token_ids) <= 64 and len(c.logprobs) == len(c.token_ids)
                        and all(0 <= t < vocab for t in c.token_ids)
                        for c in g.completions) for g in reply.groups)
                record("generate", ("OK" if ok else "MALFORMED", ""))
            except grpc.RpcError as error:
                record("generate", (error.code().name, error.details() or ""))

        def flood_score(i):
            code, details = code_of(lambda: reward_score(score, timeout=TIMEOUT))
            record("score", (code.name, details))

        def flood_load(i):
            code, details = code_of(lambda: rollout_stub.LoadAdapter(
                adapter_stream(100 + i), timeout=TIMEOUT))
            record("load", (code.name, details))

        metrics_port = rready["metrics_port"]
        stalled = []
        for _ in range(8):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", metrics_port))
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            stalled.append(sock)

        def scrape(i):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                              timeout=TIMEOUT).read().decode()
                record("scrape", ("OK" if "microrl_rollout_" in body else "EMPTY", ""))
            except OSError as error:
                record("scrape", ("ERROR", str(error)))

        threads = ([threading.Thread(target=flood_generate, args=(i,)) for i in range(32)] +
                   [threading.Thread(target=flood_score, args=(i,)) for i in range(16)] +
                   [threading.Thread(target=flood_load, args=(i,)) for i in range(4)] +
                   [threading.Thread(target=scrape, args=(i,)) for i in range(4)])
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for sock in stalled:
            sock.close()
        generated = [c for c, _ in results["generate"]]
        check(set(generated) <= {"OK", "RESOURCE_EXHAUSTED"} and "OK" in generated and
              "RESOURCE_EXHAUSTED" in generated and
              all("queue is full" in d for c, d in results["generate"]
                  if c == "RESOURCE_EXHAUSTED"),
              f"a flood of 32 Generate calls on a queue of 8: each answered well formed or "
              f"refused naming the queue, some of each ({sorted(set(generated))}, "
              f"{generated.count('OK')} OK)")
        check(all(c == "OK" for c, _ in results["score"]),
              f"16 concurrent Score calls all answered: {results['score'][:3]}")
        check(all(c in ("OK", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION")
                  for c, _ in results["load"]) and
              any(c == "OK" for c, _ in results["load"]),
              f"4 concurrent LoadAdapter streams: loaded, or refused as too many at once or "
              f"not newer ({results['load']})")
        check(all(c == "OK" for c, _ in results["scrape"]),
              f"/metrics served while 8 clients never read their answer: "
              f"{results['scrape']}")
        for name, proc in (("rollout_server", rollout), ("reward_service", reward),
                           ("learner", learner)):
            check(proc.poll() is None, f"{name} is still running")
        for name, channel in channels.items():
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                               timeout=10).status
            check(status == health_pb2.HealthCheckResponse.SERVING, f"{name} health SERVING")
        info = rollout_stub.GetInfo(common_pb2.GetInfoRequest(), timeout=10)
        check(info.adapter_version >= 100,
              f"an adapter of the flood serves ({info.adapter_version})")
        # The baseline adapter back, as version 200, for the before/after comparison.
        rollout_stub.LoadAdapter(adapter_stream(200), timeout=60)
        after_generate = rollout_stub.Generate(generate, timeout=60)
        check([list(c.token_ids) for g in after_generate.groups for c in g.completions] ==
              [list(c.token_ids) for g in before_generate.groups for c in g.completions],
              "the seeded Generate returns the same completions as before")
        after_score = reward_score(score, timeout=60)
        check([(r.reward, r.correct) for r in after_score.results] ==
              [(r.reward, r.correct) for r in before_score.results],
              "Score returns the same results as before")
        info = channels["learner"].unary_unary(
            "/microrl.v1.Learner/GetInfo",
            request_serializer=common_pb2.GetInfoRequest.SerializeToString,
            response_deserializer=learner_pb2.LearnerInfo.FromString)(
                common_pb2.GetInfoRequest(), timeout=10)
        check(info.process.component == "learner", "the learner answers GetInfo")
        for proc, name in procs:
            error = stop(proc, name)
            check(error is None, f"{name} stops cleanly ({error})")
        procs = []
    finally:
        cleanup(procs, work)
    finish()


if __name__ == "__main__":
    main()
