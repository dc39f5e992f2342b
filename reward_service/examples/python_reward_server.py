"""A complete custom reward service in Python: any server implementing
microrl.v1.Reward (proto/reward.proto) can replace microrl's reward_service; the
learner only needs its address (--reward_address).

This one scores a completion 1.0 if the last \\boxed{...} equals the ground truth
as a string (ignoring spaces and $), plus a format term for a <think>...</think>
block before the answer. Replace `score_item` with your own logic.

  pip install grpcio grpcio-tools          (microrl's venv has both)
  python reward_service/examples/python_reward_server.py --port 50062
  build/learner/learner --reward_address=127.0.0.1:50062 ...

It generates the Python stubs from proto/ at start-up, serves the standard health
service as every microrl server does, writes --ready_file like them, and stops on
SIGTERM/SIGINT. For use across machines it takes the same --tls_cert/--tls_key/
--tls_client_ca and --auth_token_file flags as microrl's services (the learner's
reward.tls_ca / reward.token_file settings match them).
"""
import argparse
import hmac
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_stubs():
    out = tempfile.mkdtemp(prefix="microrl_stubs_")
    protos = ["proto/common.proto", "proto/reward.proto", "proto/health.proto"]
    if protoc.main(["protoc", f"--proto_path={REPO}", f"--python_out={out}",
                    f"--grpc_python_out={out}"] + protos) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)
    from proto import common_pb2, health_pb2, health_pb2_grpc, reward_pb2, reward_pb2_grpc
    return common_pb2, health_pb2, health_pb2_grpc, reward_pb2, reward_pb2_grpc


common_pb2, health_pb2, health_pb2_grpc, reward_pb2, reward_pb2_grpc = load_stubs()


def last_boxed(text):
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for i in range(start + len("\\boxed"), len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len("\\boxed{"):i]
    return None


def normalize(answer):
    return re.sub(r"[\s$]", "", answer)


def score_item(item, format_weight):
    """Returns (reward, components, correct, extracted answer, reason)."""
    after = item.completion.split("</think>")[-1] if "</think>" in item.completion else ""
    well_formed = item.completion.lstrip().startswith("<think>") and \
        item.completion.count("</think>") == 1 and last_boxed(after) is not None
    answer = last_boxed(after if "<think>" in item.completion else item.completion)
    truth = last_boxed(item.ground_truth) or item.ground_truth
    correct = answer is not None and normalize(answer) == normalize(truth)
    reasons = []
    if answer is None:
        reasons.append("no \\boxed{} answer")
    elif not correct:
        reasons.append(f"answer {answer} != {truth}")
    if not well_formed:
        reasons.append("format: no <think>...</think> then \\boxed{}")
    components = {"format": 1.0 if well_formed else 0.0, "correct": 1.0 if correct else 0.0}
    reward = format_weight * components["format"] + components["correct"]
    return reward, components, correct, answer or "", "; ".join(reasons)


class RewardServicer(reward_pb2_grpc.RewardServicer):
    def __init__(self, format_weight, max_batch_items):
        self.format_weight = format_weight
        self.max_batch_items = max_batch_items
        self.started = time.time()

    def Score(self, request, context):
        if not request.items:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "items: at least one item is required")
        if len(request.items) > self.max_batch_items:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"items: {len(request.items)} exceed {self.max_batch_items}")
        response = reward_pb2.ScoreResponse()
        for item in request.items:
            start = time.perf_counter()
            reward, components, correct, answer, reason = score_item(item, self.format_weight)
            result = response.results.add(id=item.id, reward=reward, correct=correct,
                                          extracted_answer=answer, reason=reason,
                                          seconds=time.perf_counter() - start)
            result.components.update(components)
        return response

    def GetInfo(self, request, context):
        info = reward_pb2.RewardInfo(name="python_example_exact_match",
                                     item_deadline_seconds=1.0,
                                     max_batch_items=self.max_batch_items)
        info.process.component = "python_reward_server"
        info.process.version = "example"
        info.process.pid = os.getpid()
        info.process.uptime_seconds = time.time() - self.started
        info.component_weights.update({"format": self.format_weight, "correct": 1.0})
        return info


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self):
        self.serving = True

    def Check(self, request, context):
        if request.service not in ("", "microrl.v1.Reward"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service}")
        status = health_pb2.HealthCheckResponse.SERVING if self.serving else \
            health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)


class TokenCheck(grpc.ServerInterceptor):
    """Refuses every call that does not carry "authorization: Bearer <token>", as
    microrl's own services do with --auth_token_file (UNAUTHENTICATED)."""

    def __init__(self, token):
        self.expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
        self.deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        given = [value for key, value in (details.invocation_metadata or ())
                 if key == "authorization"]
        # Constant-time comparison: the time taken says nothing about the token.
        if len(given) == 1 and hmac.compare_digest(
                given[0].encode() if isinstance(given[0], str) else given[0],
                self.expected):
            return continuation(details)
        return self.deny


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50062, help="0 picks a free port")
    parser.add_argument("--ready_file", default="")
    parser.add_argument("--format_weight", type=float, default=0.1)
    parser.add_argument("--max_batch_items", type=int, default=8192)
    parser.add_argument("--tls_cert", default="", help="PEM certificate: serve TLS")
    parser.add_argument("--tls_key", default="", help="PEM key of --tls_cert")
    parser.add_argument("--tls_client_ca", default="",
                        help="PEM CA: require client certificates (mutual TLS)")
    parser.add_argument("--auth_token_file", default="",
                        help="file with the token every call must carry")
    args = parser.parse_args()

    interceptors = []
    if args.auth_token_file:
        token = read(args.auth_token_file).decode().strip()
        if len(token) < 16:
            sys.exit(f"--auth_token_file {args.auth_token_file}: the token needs 16+ characters")
        interceptors.append(TokenCheck(token))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors,
                         options=[("grpc.max_receive_message_length", 256 << 20),
                                  ("grpc.max_send_message_length", 256 << 20),
                                  ("grpc.so_reuseport", 0)])
    health = HealthServicer()
    reward_pb2_grpc.add_RewardServicer_to_server(
        RewardServicer(args.format_weight, args.max_batch_items), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if args.tls_cert:
        credentials = grpc.ssl_server_credentials(
            [(read(args.tls_key), read(args.tls_cert))],
            root_certificates=read(args.tls_client_ca) if args.tls_client_ca else None,
            require_client_auth=bool(args.tls_client_ca))
        port = server.add_secure_port(f"{args.host}:{args.port}", credentials)
    elif interceptors:
        # A token without TLS, like microrl's services: loopback connections only.
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            sys.exit("--auth_token_file without --tls_cert needs a loopback --host")
        port = server.add_secure_port(f"{args.host}:{args.port}",
                                      grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP))
    else:
        port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        sys.exit(f"cannot serve on {args.host}:{args.port}")
    server.start()
    print(f"python_reward_server: serving on {args.host}:{port}", flush=True)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"component": "python_reward_server", "grpc_port": port,
                       "metrics_port": 0, "pid": os.getpid()}, f)
        os.replace(tmp, args.ready_file)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    health.serving = False
    server.stop(grace=1).wait()
    if args.ready_file and os.path.exists(args.ready_file):
        os.remove(args.ready_file)


if __name__ == "__main__":
    main()
