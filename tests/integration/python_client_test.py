"""The gRPC contracts work from another language: Python (grpcio) stubs generated from
proto/ talk to the real reward_service and rollout_server binaries.

Run by ctest (label integration) with the venv made by deploy/setup.sh:
  python_client_test.py --reward_service BIN --rollout_server BIN --source_dir REPO
"""
import os
import sys
import tempfile

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_process import generate_stubs, required_args, start, stop  # noqa: E402


def main():
    args = required_args("reward_service", "rollout_server", "source_dir")

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
