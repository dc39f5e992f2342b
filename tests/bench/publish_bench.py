"""Adapter publish latency: microrl (learner -> rollout_server over gRPC, and on a GPU by
CUDA IPC handle) against PEFT's hand-off through files, for the same model shape and rank.

  publish_bench.py [--shape qwen2.5-1.5b] [--rank 256] [--device cpu|cuda] [--iters 5]
                   [--build_dir build] [--model_dir DIR]

Makes a random-weight model of the shape with transformers (bfloat16), starts a real
rollout_server on it (loopback, bfloat16), and runs publish_bench: a random rank-r adapter on
all seven linear layers of every decoder layer is published --iters times as the learner does
after a step (serialize from the learner's device, stream over gRPC with SHA-256; the server
checks, parses, copies to its device and swaps). The peer is what a PEFT-based trainer does
to hand an adapter to a separate inference process: save_pretrained to /dev/shm, then
load_file + set_peft_model_state_dict into a PeftModel on the device. Prints medians, the
ratio (PEFT / microrl; > 1 means microrl is faster) and the issue's goals (gRPC <= 1 s,
CUDA IPC <= 100 ms; the IPC run packs the weights on the GPU and hands over a handle; the
server copies them device to device).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "support"))
from bench_models import SHAPES, make_or_load  # noqa: E402
import service_process  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peft_handoff(model, rank, device, iters):
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    model = model.to(device)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=128,
                                                  target_modules=TARGETS))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    samples = []
    size = 0
    for i in range(iters + 1):
        work = tempfile.mkdtemp(prefix="peft_publish.", dir=shm)
        try:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            peft_model.save_pretrained(work)
            state = load_file(os.path.join(work, "adapter_model.safetensors"), device=device)
            set_peft_model_state_dict(peft_model, state)
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            size = os.path.getsize(os.path.join(work, "adapter_model.safetensors"))
        finally:
            shutil.rmtree(work)
        if i > 0:
            samples.append(elapsed)
    dtype = next(p.dtype for n, p in peft_model.named_parameters() if "lora_A" in n)
    return sorted(samples)[len(samples) // 2], size, str(dtype)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="qwen2.5-1.5b", choices=SHAPES)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--build_dir", default=os.path.join(HERE, "..", "..", "build"))
    parser.add_argument("--rollout_server", default="")
    parser.add_argument("--bench_bin", default="")
    parser.add_argument("--skip_peft", action="store_true")
    parser.add_argument("--model_dir", default="",
                        help="the random model's directory, shared with other benchmarks "
                             "(made there if it holds none)")
    args = parser.parse_args()
    rollout_server = args.rollout_server or os.path.join(args.build_dir,
                                                         "rollout_server/rollout_server")
    bench_bin = args.bench_bin or os.path.join(args.build_dir, "tests/bench/publish_bench")

    work = tempfile.mkdtemp(prefix="publish_bench.")
    try:
        start = time.perf_counter()
        model_dir = args.model_dir or os.path.join(work, "model")
        model = make_or_load(args.shape, model_dir, torch.bfloat16)
        print(f"model {args.shape} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
              f"parameters, bfloat16) made in {time.perf_counter() - start:.1f} s; LoRA rank "
              f"{args.rank} on {', '.join(TARGETS)}; device {args.device}", flush=True)
        server, ready = service_process.start(
            rollout_server, work, "rollout",
            [f"--model={model_dir}", f"--device={args.device}", "--dtype=bfloat16",
             "--kv_cache_mb=64", "--max_model_len=256", "--max_message_mb=64"])
        transports = ["grpc", "cuda_ipc"] if args.device.startswith("cuda") else ["grpc"]
        results = {}
        try:
            for transport in transports:
                result = subprocess.run(
                    [bench_bin, f"--model={model_dir}",
                     f"--rollout=127.0.0.1:{ready['grpc_port']}", f"--rank={args.rank}",
                     f"--iters={args.iters}", f"--device={args.device}", "--dtype=bfloat16",
                     f"--transport={transport}"],
                    capture_output=True, text=True)
                if result.returncode != 0:
                    print(f"publish_bench --transport={transport} failed: {result.stderr}")
                    continue
                results[transport] = json.loads(result.stdout.strip().splitlines()[-1])
        finally:
            error = service_process.stop(server, "rollout_server")
            if error or not results:
                print(open(os.path.join(work, "rollout.log")).read())
                sys.exit(error or "no transport worked")
        goals = {"grpc": 1.0, "cuda_ipc": 0.1}
        for transport, r in results.items():
            print(f"microrl {transport} publish: {r['bytes'] / 2**20:.0f} MiB ({r['dtype']}, "
                  f"{r['parameters'] / 1e6:.0f}M parameters): median {r['total_s'] * 1e3:.0f} ms"
                  f" = {'serialize' if transport == 'grpc' else 'pack on the GPU'} "
                  f"{r['serialize_s'] * 1e3:.0f} ms + LoadAdapter {r['rpc_s'] * 1e3:.0f} ms "
                  f"(server: receive {r['receive_s'] * 1e3:.0f} ms, load "
                  f"{r['load_s'] * 1e3:.0f} ms, swap {r['swap_s'] * 1e3:.0f} ms); goal <= "
                  f"{goals[transport] * 1e3:.0f} ms: "
                  f"{'met' if r['total_s'] <= goals[transport] else 'NOT met'}", flush=True)
        if "cuda_ipc" in results:
            v = results["cuda_ipc"].get("ipc_validation") or {}
            print(f"CUDA IPC validation (a real handle, size / offset 4 GiB past its "
                  f"allocation): {v.get('size_past_allocation')} / "
                  f"{v.get('offset_past_allocation')}, server alive {v.get('alive_after')}, "
                  f"a valid load after: {v.get('valid_after')}: "
                  f"{'ok' if v.get('ok') else 'FAILED'}", flush=True)
        ours = results.get("cuda_ipc", results.get("grpc"))
        report = {"microrl": results}
        if not args.skip_peft:
            peft_s, peft_bytes, peft_dtype = peft_handoff(model, args.rank, args.device,
                                                          args.iters)
            print(f"PEFT save_pretrained + load into a PeftModel: {peft_bytes / 2**20:.0f} MiB "
                  f"({peft_dtype}): median {peft_s * 1e3:.0f} ms; ratio PEFT / microrl "
                  + ", ".join(f"{t} {peft_s / r['total_s']:.2f}" for t, r in results.items()))
            report["peft"] = {"total_s": peft_s, "bytes": peft_bytes, "dtype": peft_dtype}
        print(json.dumps(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
