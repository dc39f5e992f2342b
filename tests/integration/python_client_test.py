"""The gRPC contracts work from another language: Python (grpcio) stubs generated from
proto/ talk to the real reward_service and rollout_server binaries.

Run by ctest (label integration) with the venv made by deploy/setup.sh:
  python_client_test.py --reward_service BIN --rollout_server BIN --source_dir REPO
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def generate_stubs(source_dir, out_dir):
    protos = ["proto/common.proto", "proto/rollout.proto", "proto/reward.proto",
              "proto/learner.proto", "proto/health.proto"]
    rc = protoc.main(["protoc", f"--proto_path={source_dir}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}"] + protos)
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out_dir)


def start(binary, work_dir, name):
    ready = os.path.join(work_dir, name + ".ready")
    log = open(os.path.join(work_dir, name + ".log"), "w")
    proc = subprocess.Popen([binary, "--port=0", "--metrics_port=0", f"--ready_file={ready}"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not os.path.exists(ready):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            proc.wait()
            sys.exit(f"{name} did not become ready: {open(log.name).read()}")
        time.sleep(0.02)
    with open(ready) as f:
        return proc, json.load(f)


def stop(proc, name):
    """SIGTERM, then SIGKILL if it does not stop; returns an error string or None."""
    if proc.poll() is not None:
        return f"{name} had already exited with {proc.returncode}"
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return f"{name} did not stop within 20 s of SIGTERM"
    return None if code == 0 else f"{name} exited with {code}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reward_service", required=True)
    parser.add_argument("--rollout_server", required=True)
    parser.add_argument("--source_dir", required=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work_dir:
        generate_stubs(args.source_dir, work_dir)
        # Generated above, as the package "proto" (the .proto files' directory).
        from proto import common_pb2, health_pb2, health_pb2_grpc  # noqa: E402
        from proto import reward_pb2, reward_pb2_grpc, rollout_pb2, rollout_pb2_grpc

        running = []
        try:
            reward, reward_ready = start(args.reward_service, work_dir, "reward_service")
            running.append((reward, "reward_service"))
            rollout, rollout_ready = start(args.rollout_server, work_dir, "rollout_server")
            running.append((rollout, "rollout_server"))
            reward_channel = grpc.insecure_channel(f"127.0.0.1:{reward_ready['grpc_port']}")
            rollout_channel = grpc.insecure_channel(f"127.0.0.1:{rollout_ready['grpc_port']}")

            health = health_pb2_grpc.HealthStub(reward_channel)
            answer = health.Check(health_pb2.HealthCheckRequest(service="microrl.v1.Reward"),
                                  timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, answer

            info = reward_pb2_grpc.RewardStub(reward_channel).GetInfo(
                common_pb2.GetInfoRequest(), timeout=10)
            assert info.process.component == "reward_service", info
            assert info.process.pid == reward.pid, (info.process.pid, reward.pid)
            assert info.max_batch_items == 8192, info

            # Score from another language: one right answer, one malformed batch.
            request = reward_pb2.ScoreRequest(items=[reward_pb2.ScoreItem(
                id="q1", prompt="p", completion="<think>x</think> \\boxed{\\frac{1}{2}}",
                ground_truth="0.5", metadata={"dataset": "unit"})])
            scored = reward_pb2_grpc.RewardStub(reward_channel).Score(request, timeout=10)
            assert len(scored.results) == 1, scored
            assert scored.results[0].id == "q1" and scored.results[0].correct, scored
            assert abs(scored.results[0].reward - 1.1) < 1e-9, scored
            try:
                reward_pb2_grpc.RewardStub(reward_channel).Score(reward_pb2.ScoreRequest(),
                                                                 timeout=10)
                sys.exit("an empty Score request was accepted")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error

            rollout_info = rollout_pb2_grpc.RolloutStub(rollout_channel).GetInfo(
                common_pb2.GetInfoRequest(), timeout=10)
            assert rollout_info.state == rollout_pb2.ROLLOUT_STATE_NO_MODEL, rollout_info
            assert rollout_info.device == "cpu", rollout_info
            import torch
            assert rollout_info.torch_version == torch.__version__.split("+")[0], (
                rollout_info.torch_version, torch.__version__)
        finally:
            errors = [e for e in (stop(p, name) for p, name in running) if e]
        if errors:
            sys.exit("; ".join(errors))
    print("python client: OK")


if __name__ == "__main__":
    main()
