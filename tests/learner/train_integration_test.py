"""End to end: real rollout_server, reward_service and learner processes on loopback train
a tiny random Qwen2 (transformers, with the real Qwen3 tokenizer) for a few GRPO steps.

Checked: the learner exits 0 after max_steps; metrics.jsonl has a line per step with the
paper's metrics and a validation line; checkpoints (pruned to keep_checkpoints), the final
PEFT adapter (loadable by PEFT) and the resolved config are written; the rollout server
serves the published adapter version; the learner's /metrics showed the training gauges
while it ran; a run stopped at step 2 and resumed to step 4 ends with a bit-identical
adapter and the same data order as an uninterrupted 4-step run; bad configurations fail
with a message naming the key.

  train_integration_test.py --rollout_server BIN --reward_service BIN --learner BIN
                            --source_dir REPO --shared SHARED_DIR
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import FAILURES, check, finish  # noqa: E402
from service_process import generate_stubs, start, stop  # noqa: E402
from tiny_model import make_tiny_qwen2  # noqa: E402

def config_text(work, model_dir, shared, rollout, reward, name, max_steps):
    return f"""
run:
  name: {name}
  output_dir: {work}/runs
  seed: 5
  max_steps: {max_steps}
  checkpoint_every: 2
  keep_checkpoints: 1
model:
  path: {model_dir}
  gradient_checkpointing: true
lora:
  rank: 4
  alpha: 8
data:
  train: {shared}/data/math_train.jsonl
rollout:
  address: 127.0.0.1:{rollout}
  prompts_per_step: 2
  group_size: 4
  max_response_tokens: 12
  temperature: 1.0
  colocated: true
reward:
  address: 127.0.0.1:{reward}
grpo:
  kl_coef: 0.05
  entropy_coef: 0.01
  mini_batches: 2
  clip_high: 0.28
optim:
  lr: 1.0e-2
  schedule: cosine
  warmup_steps: 1
eval:
  path: {shared}/data/math500.jsonl
  every: 2
  problems: 3
  max_tokens: 8
  final_datasets: [amc23]
  data_dir: {shared}/data
  final_samples: 2
  final_compare_base: false
"""


def run_learner(args, work, config_path, extra=(), watch_metrics=None, stop_after=None):
    """Runs the learner to completion (or sends SIGTERM once a line containing
    `stop_after` is printed); returns (exit code, output, metrics seen)."""
    ready = os.path.join(work, "learner.ready")
    if os.path.exists(ready):
        os.remove(ready)
    proc = subprocess.Popen([args.learner, "--port=0", "--metrics_port=0",
                             f"--ready_file={ready}", f"--config={config_path}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    if stop_after is not None:
        printed = ""
        for line in proc.stdout:
            printed += line
            if stop_after in line:
                proc.send_signal(signal.SIGTERM)
                break
        out, _ = proc.communicate(timeout=300)
        return proc.returncode, printed + out, seen
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if watch_metrics and os.path.exists(ready) and watch_metrics not in seen:
            try:
                port = json.load(open(ready))["metrics_port"]
                seen = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=2).read().decode()
            except Exception:  # noqa: BLE001 -- not up yet, or just exited
                pass
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    out = proc.communicate()[0]
    return proc.returncode, out, seen


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    parser = argparse.ArgumentParser()
    for flag in ("rollout_server", "reward_service", "learner", "source_dir", "shared"):
        parser.add_argument(f"--{flag}", required=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        generate_stubs(args.source_dir, work)
        from proto import common_pb2, rollout_pb2_grpc  # noqa: E402
        model_dir = os.path.join(work, "model")
        make_tiny_qwen2(model_dir, args.shared, max_positions=1024)
        running = []
        try:
            rollout, rollout_ready = start(args.rollout_server, work, "rollout_server",
                                           [f"--model={model_dir}", "--kv_cache_mb=64",
                                            "--max_model_len=512"])
            running.append((rollout, "rollout_server"))
            reward, reward_ready = start(args.reward_service, work, "reward_service")
            running.append((reward, "reward_service"))
            ports = (rollout_ready["grpc_port"], reward_ready["grpc_port"])
            stub = rollout_pb2_grpc.RolloutStub(grpc.insecure_channel(f"127.0.0.1:{ports[0]}"))

            def write_config(name, steps):
                path = os.path.join(work, f"{name}-{steps}.yaml")
                with open(path, "w") as f:
                    f.write(config_text(work, model_dir, args.shared, *ports, name, steps))
                return path

            # ---- an uninterrupted 4-step run
            code, out, seen = run_learner(args, work, write_config("full", 4),
                                          watch_metrics="microrl_train_reward_mean")
            check(code == 0, f"learner exited with {code}:\n{out[-3000:]}")
            run_dir = os.path.join(work, "runs", "full")
            lines = read_lines(os.path.join(run_dir, "metrics.jsonl"))
            steps = [l for l in lines if "eval" not in l]
            evals = [l for l in lines if "eval" in l]
            check([l["step"] for l in steps] == [1, 2, 3, 4], f"steps {[l['step'] for l in steps]}")
            check([l["step"] for l in evals] == [2, 4], f"evals {evals}")
            for key in ("reward_mean", "reward_std", "accuracy", "zero_variance_fraction",
                        "response_length_mean", "response_length_max", "clipped_ratio",
                        "entropy", "kl", "clip_fraction_low", "clip_fraction_high",
                        "policy_loss", "grad_norm", "lr", "logprob_mismatch_mean",
                        "time/generate", "time/score", "time/update", "time/publish",
                        "time/step", "generate_tokens_per_second", "adapter_version",
                        "gpu_memory_allocated_bytes", "reward/format", "reward/correct"):
                check(all(key in l for l in steps), f"metrics.jsonl lacks {key}")
            check(all("val_pass@1" in l for l in evals), "validation lines lack val_pass@1")
            check(all(l["logprob_mismatch_mean"] < 1e-3 for l in steps),
                  f"rollout/learner log-prob mismatch {[l['logprob_mismatch_mean'] for l in steps]}")
            check(steps[-1]["adapter_version"] == 5, f"adapter version {steps[-1]['adapter_version']}")
            # Two optimizer steps per training step: warmup (lr 0) then the peak, then
            # cosine decay.
            lrs = [l["lr"] for l in steps]
            check(lrs[0] == 1e-2 and lrs[0] > lrs[1] > lrs[2] > lrs[3] > 0, f"schedule {lrs}")
            check("step 4/4 | reward" in out, f"no progress line in {out[-2000:]}")
            check("microrl_train_reward_mean" in seen, "learner /metrics never showed training")
            info = stub.GetInfo(common_pb2.GetInfoRequest(), timeout=10)
            check(info.adapter_version == 5, f"rollout serves version {info.adapter_version}")
            checkpoints = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
            check(checkpoints == ["step_00000004"], f"checkpoints {checkpoints}")
            final = open(os.path.join(run_dir, "eval", "eval.md")).read()
            check("| amc23 | 40 | 2 | " in final, f"final evaluation table: {final}")
            for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                         "config.yaml", "checkpoints/step_00000004/state.json",
                         "checkpoints/step_00000004/optimizer.safetensors"):
                check(os.path.exists(os.path.join(run_dir, name)), f"missing {name}")
            # PEFT loads the final adapter onto the model.
            from peft import PeftModel
            from transformers import AutoModelForCausalLM
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir),
                                      os.path.join(run_dir, "adapter"))
            # The same run again without --resume is refused.
            code, out, _ = run_learner(args, work, write_config("full", 4))
            check(code == 1 and "--resume" in out, f"rerun without --resume: {code} {out[-500:]}")

            # ---- the same run stopped by SIGTERM once step 2 is logged, then resumed
            split_config = write_config("split", 4)
            code, out, _ = run_learner(args, work, split_config, stop_after="step 2/4")
            check(code == 0, f"stopped run exited with {code}:\n{out[-3000:]}")
            stopped_at = read_lines(os.path.join(work, "runs", "split", "metrics.jsonl"))
            check(2 <= len([l for l in stopped_at if "eval" not in l]) < 4,
                  f"the stopped run logged {len(stopped_at)} lines")
            code, out, _ = run_learner(args, work, split_config, ["--resume"])
            check(code == 0, f"resumed half exited with {code}:\n{out[-3000:]}")
            split_dir = os.path.join(work, "runs", "split")
            with open(os.path.join(run_dir, "adapter", "adapter_model.safetensors"), "rb") as f:
                full_bytes = f.read()
            with open(os.path.join(split_dir, "adapter", "adapter_model.safetensors"), "rb") as f:
                split_bytes = f.read()
            check(full_bytes == split_bytes, "a resumed run ends with a different adapter")
            split_steps = [l for l in read_lines(os.path.join(split_dir, "metrics.jsonl"))
                           if "eval" not in l]
            check([l["problems"] for l in split_steps] == [l["problems"] for l in steps],
                  "a resumed run trains on other problems")
            check([l["reward_mean"] for l in split_steps] == [l["reward_mean"] for l in steps],
                  "a resumed run has other rewards")

            # ---- learner eval: pass@k of the trained adapter and of the base model
            eval_dir = os.path.join(work, "eval")
            result = subprocess.run(
                [args.learner, "eval", f"--model={model_dir}",
                 f"--adapter={os.path.join(run_dir, 'adapter')}", "--compare_base",
                 "--datasets=aime24,amc=" + os.path.join(args.shared, "data", "amc23.jsonl"),
                 f"--data_dir={os.path.join(args.shared, 'data')}", "--problems=2",
                 "--samples=4", "--ks=1,2,4", "--max_tokens=8",
                 f"--rollout_address=127.0.0.1:{ports[0]}",
                 f"--reward_address=127.0.0.1:{ports[1]}", f"--out={eval_dir}"],
                capture_output=True, text=True, timeout=300)
            check(result.returncode == 0, f"eval exited {result.returncode}: {result.stderr[-2000:]}")
            table = open(os.path.join(eval_dir, "eval.md")).read() if result.returncode == 0 else ""
            check("| dataset | problems | n | pass@1 | pass@2 | pass@4 |" in table, table)
            check("| aime24 | 2 | 4 |" in table and "| amc | 2 | 4 |" in table, table)
            check("relative change of mean token entropy" in table, table)
            results = json.load(open(os.path.join(eval_dir, "eval.json"))) if table else []
            check([r["model"] for r in results].count("base") == 2, f"eval.json {results}")
            check(all(0 <= r["pass@4"] <= 1 and r["mean_entropy"] > 0 for r in results),
                  f"eval.json {results}")
            adapted = [r for r in results if r["model"] != "base"]
            served = stub.GetInfo(common_pb2.GetInfoRequest(), timeout=10).adapter_version
            check(all(r["adapter_version"] == served for r in adapted), f"eval adapter {adapted}")
            bad_eval = subprocess.run([args.learner, "eval", f"--model={model_dir}",
                                       "--datasets=nope", f"--data_dir={work}",
                                       f"--rollout_address=127.0.0.1:{ports[0]}",
                                       f"--reward_address=127.0.0.1:{ports[1]}"],
                                      capture_output=True, text=True, timeout=60)
            check(bad_eval.returncode == 1 and "nope.jsonl" in bad_eval.stderr,
                  f"eval of a missing dataset: {bad_eval.returncode} {bad_eval.stderr}")

            # ---- an unreachable rollout server: retried, then a clear error, no checkpoint
            code, out, _ = run_learner(args, work, write_config("nopeer", 2),
                                       ["--set=rollout.address=127.0.0.1:1;"
                                        "rollout.max_wait_s=3"])
            check(code == 1 and "unavailable after" in out and "attempts over" in out,
                  f"unreachable rollout server: {code} {out[-800:]}")
            nopeer = os.path.join(work, "runs", "nopeer", "checkpoints")
            check(os.path.isdir(nopeer) and not os.listdir(nopeer),
                  f"a run that never stepped left checkpoints {os.listdir(nopeer)}")

            # ---- bad configurations
            bad = os.path.join(work, "bad.yaml")
            with open(bad, "w") as f:
                f.write(config_text(work, model_dir, args.shared, *ports, "bad", 2) +
                        "\nextra:\n  x: 1\n")
            code, out, _ = run_learner(args, work, bad)
            check(code == 2 and "bad.yaml" in out and "unknown section" in out,
                  f"bad section: {code} {out[-500:]}")
            code, out, _ = run_learner(args, work, write_config("ok", 2),
                                       ["--set=rollout.group_size=1"])
            check(code == 2 and "rollout.group_size" in out, f"bad override: {code} {out[-500:]}")
            # CUDA IPC asked for with the learner on the CPU: refused at start.
            code, out, _ = run_learner(args, work, write_config("ipc", 2),
                                       ["--set=rollout.publish_via=cuda_ipc"])
            check(code == 2 and "cuda_ipc needs the learner on a GPU" in out,
                  f"cuda_ipc on the CPU: {code} {out[-800:]}")
        finally:
            errors = [e for e in (stop(p, name) for p, name in running) if e]
            if FAILURES or errors:
                for _, name in running:
                    print(f"--- {name} log:\n" + open(os.path.join(work, name + ".log")).read()[-3000:])
        FAILURES.extend(errors)
    finish()


if __name__ == "__main__":
    main()
