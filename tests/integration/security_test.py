"""Security of the services (label fault): real binaries on loopback, certificates made
here with the openssl command.

1. Default binding: rollout_server, reward_service and learner started without --host
   listen (gRPC and /metrics) on 127.0.0.1 only (read from /proc/net/tcp).
2. Shared token (--auth_token_file, or MICRORL_AUTH_TOKEN) without TLS: the server takes
   loopback connections only (gRPC's local credentials); calls without the token or with a wrong one get UNAUTHENTICATED, health
   included; the right one works; the server keeps serving; the token appears in no
   log; a malformed token file is refused at start-up naming the flag, without echoing
   the file; a token without TLS on a non-loopback --host is refused.
3. TLS: a plaintext client cannot talk to a TLS server; a client trusting the CA can.
   Mutual TLS (--tls_client_ca): a client without a certificate is refused, one with a
   certificate the CA signed is served.
4. The learner across TLS + tokens: rollout_server with TLS and a token, the Python
   example reward service with mutual TLS and another token; the learner (rollout.* and
   reward.* tls/token settings) trains 2 steps; `microrl status --tls_ca
   --auth_token_file` reports SERVING; no log holds either token.
5. Adapter loading by path (--adapter_dir): absolute paths and ".." are refused
   (INVALID_ARGUMENT), a symbolic link inside the directory that leads out of it is
   refused (PERMISSION_DENIED), a real adapter inside loads; the previous adapter keeps
   serving after each refusal.

  security_test.py --rollout_server BIN --reward_service BIN --learner BIN --microrl BIN
                   --source_dir REPO
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish  # noqa: E402
from service_process import cleanup, generate_stubs, make_demo, start, stop  # noqa: E402

TOKEN = "s3cret-Token_for.tests+0123456789="
OTHER_TOKEN = "another-token-for-the-reward-9876"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=microrl test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "localhost"), ("client", "microrl learner")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        extra = ["-extfile", "san.cnf"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *extra, cwd=d)
    return {k: os.path.join(d, k) for k in ("ca.pem", "server.pem", "server.key",
                                            "client.pem", "client.key")}


def listening_hosts(port):
    """Local addresses (hex, as /proc/net/tcp writes them) listening on `port`."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                address, state = fields[1], fields[3]
                host, hex_port = address.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:
                    hosts.add(host)
    return hosts


def call_code(fn):
    try:
        fn()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def logs_free_of(work, secrets):
    found = []
    for name in os.listdir(work):
        if name.endswith(".log"):
            text = open(os.path.join(work, name), errors="replace").read()
            found += [name for s in secrets if s in text]
    return found


def main():
    parser = argparse.ArgumentParser()
    for flag in ("rollout_server", "reward_service", "learner", "microrl", "source_dir"):
        parser.add_argument(f"--{flag}", required=True)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="microrl_security_")
    os.makedirs(os.path.join(work, "stubs"))
    generate_stubs(args.source_dir, os.path.join(work, "stubs"))
    from proto import (common_pb2, health_pb2, health_pb2_grpc, reward_pb2,  # noqa: E402
                       reward_pb2_grpc, rollout_pb2, rollout_pb2_grpc)
    certs = make_certificates(work)
    token_file = os.path.join(work, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    other_token_file = os.path.join(work, "other_token")
    with open(other_token_file, "w") as f:
        f.write(OTHER_TOKEN)
    make_demo(args.source_dir, os.path.join(work, "demo"), seed=2)
    model = os.path.join(work, "demo", "model")
    procs = []

    def launch(binary, name, extra=(), env=None):
        if env:
            old = dict(os.environ)
            os.environ.update(env)
        try:
            proc, ready = start(binary, work, name, list(extra))
        finally:
            if env:
                os.environ.clear()
                os.environ.update(old)
        procs.append((proc, name))
        return proc, ready

    def score_request():
        return reward_pb2.ScoreRequest(items=[reward_pb2.ScoreItem(
            id="1", completion="<think>x</think>\\boxed{2}", ground_truth="2")])

    try:
        # ---- 1. default binding
        for binary, name, extra in ((args.reward_service, "bind_reward", []),
                                    (args.rollout_server, "bind_rollout", [f"--model={model}"]),
                                    (args.learner, "bind_learner", ["--rollout_address=",
                                                                    "--reward_address="])):
            proc, ready = launch(binary, name, extra)
            for kind in ("grpc_port", "metrics_port"):
                hosts = listening_hosts(ready[kind])
                # 127.0.0.1, or its IPv4-mapped IPv6 form ::ffff:127.0.0.1
                check(hosts and hosts <= {"0100007F", "0000000000000000FFFF00000100007F"},
                      f"{name}: {kind} {ready[kind]} listens on 127.0.0.1 only ({hosts})")
            stop(proc, name)

        # ---- 2. shared token
        proc, ready = launch(args.reward_service, "token_reward",
                             [f"--auth_token_file={token_file}"])
        address = f"127.0.0.1:{ready['grpc_port']}"
        plain = reward_pb2_grpc.RewardStub(grpc.insecure_channel(address))
        got = call_code(lambda: plain.Score(score_request(), timeout=5))
        check(got in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED),
              f"a plain client without the token is refused ({got})")
        channel = grpc.secure_channel(address, grpc.local_channel_credentials(
            grpc.LocalConnectionType.LOCAL_TCP))
        stub = reward_pb2_grpc.RewardStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        check(call_code(lambda: stub.Score(score_request(), timeout=10))
              == grpc.StatusCode.UNAUTHENTICATED, "Score without the token: UNAUTHENTICATED")
        check(call_code(lambda: stub.Score(score_request(), timeout=10, metadata=[
            ("authorization", "Bearer wrong-token-0123456789")]))
              == grpc.StatusCode.UNAUTHENTICATED, "Score with a wrong token: UNAUTHENTICATED")
        check(call_code(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10))
              == grpc.StatusCode.UNAUTHENTICATED, "health without the token: UNAUTHENTICATED")
        auth = [("authorization", f"Bearer {TOKEN}")]
        reply = stub.Score(score_request(), timeout=10, metadata=auth)
        check(len(reply.results) == 1 and reply.results[0].correct,
              "Score with the token is served")
        check(call_code(lambda: stub.GetInfo(common_pb2.GetInfoRequest(), timeout=10,
                                             metadata=auth)) == grpc.StatusCode.OK,
              "after refusals the server still serves")
        stop(proc, "token_reward")
        proc, ready = launch(args.reward_service, "env_token_reward",
                             env={"MICRORL_AUTH_TOKEN": OTHER_TOKEN})
        stub = reward_pb2_grpc.RewardStub(grpc.secure_channel(
            f"127.0.0.1:{ready['grpc_port']}",
            grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)))
        check(call_code(lambda: stub.Score(score_request(), timeout=10, metadata=[
            ("authorization", f"Bearer {OTHER_TOKEN}")])) == grpc.StatusCode.OK and
              call_code(lambda: stub.Score(score_request(), timeout=10))
              == grpc.StatusCode.UNAUTHENTICATED,
              "MICRORL_AUTH_TOKEN works as the token")
        stop(proc, "env_token_reward")
        bad = os.path.join(work, "bad_token")
        with open(bad, "w") as f:
            f.write("tiny-secret")
        out = subprocess.run([args.reward_service, "--port=0", "--metrics_port=0",
                              f"--auth_token_file={bad}"], capture_output=True, text=True,
                             timeout=30)
        check(out.returncode == 2 and "--auth_token_file" in out.stderr and
              "tiny-secret" not in out.stderr + out.stdout,
              f"a malformed token file is refused naming the flag, not the secret: "
              f"{out.returncode} {out.stderr.strip()}")
        out = subprocess.run([args.reward_service, "--host=0.0.0.0", "--port=0",
                              "--metrics_port=0", f"--auth_token_file={token_file}"],
                             capture_output=True, text=True, timeout=30)
        check(out.returncode == 2 and "--host=0.0.0.0" in out.stderr and
              "loopback only" in out.stderr,
              f"a token without TLS off loopback is refused: {out.returncode} "
              f"{(out.stderr + out.stdout).strip()[-200:]}")
        # A non-loopback bind needs a client credential, or an explicit
        # --insecure_allow_remote (docker compose's private network), for each binary.
        for binary in (args.reward_service, args.rollout_server, args.learner):
            out = subprocess.run([binary, "--host=0.0.0.0", "--port=0", "--metrics_port=0"],
                                 capture_output=True, text=True, timeout=60)
            check(out.returncode == 2 and "--insecure_allow_remote" in out.stderr and
                  "no client credential" in out.stderr,
                  f"{os.path.basename(binary)} --host=0.0.0.0 without a credential is "
                  f"refused, naming the way out: {out.returncode} {out.stderr.strip()[-200:]}")
        proc, ready = launch(args.reward_service, "open_reward",
                             ["--host=0.0.0.0", "--insecure_allow_remote"])
        stub = reward_pb2_grpc.RewardStub(
            grpc.insecure_channel(f"127.0.0.1:{ready['grpc_port']}"))
        check(call_code(lambda: stub.Score(score_request(), timeout=10))
              == grpc.StatusCode.OK, "with --insecure_allow_remote it serves on 0.0.0.0")
        stop(proc, "open_reward")
        out = subprocess.run([args.reward_service, "--host=0.0.0.0", "--insecure_allow_remote",
                              "--port=0", "--metrics_port=0",
                              f"--auth_token_file={token_file}"],
                             capture_output=True, text=True, timeout=30)
        check(out.returncode == 2 and "loopback only" in out.stderr,
              "a token without TLS stays loopback-only even with --insecure_allow_remote")
        # Token and TLS on 0.0.0.0: a credential, so no flag is needed.
        proc, ready = launch(args.reward_service, "tls_token_reward",
                             ["--host=0.0.0.0", f"--tls_cert={certs['server.pem']}",
                              f"--tls_key={certs['server.key']}",
                              f"--auth_token_file={token_file}"])
        stop(proc, "tls_token_reward")

        # ---- 3. TLS and mutual TLS
        proc, ready = launch(args.reward_service, "tls_reward",
                             [f"--tls_cert={certs['server.pem']}",
                              f"--tls_key={certs['server.key']}"])
        address = f"127.0.0.1:{ready['grpc_port']}"
        plain = reward_pb2_grpc.RewardStub(grpc.insecure_channel(address))
        check(call_code(lambda: plain.GetInfo(common_pb2.GetInfoRequest(), timeout=5))
              == grpc.StatusCode.UNAVAILABLE, "a plaintext client cannot reach a TLS server")
        ca = open(certs["ca.pem"], "rb").read()
        tls = reward_pb2_grpc.RewardStub(grpc.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=ca)))
        check(call_code(lambda: tls.GetInfo(common_pb2.GetInfoRequest(), timeout=10))
              == grpc.StatusCode.OK, "a client trusting the CA is served over TLS")
        stop(proc, "tls_reward")
        proc, ready = launch(args.reward_service, "mtls_reward",
                             [f"--tls_cert={certs['server.pem']}",
                              f"--tls_key={certs['server.key']}",
                              f"--tls_client_ca={certs['ca.pem']}"])
        address = f"127.0.0.1:{ready['grpc_port']}"
        no_cert = reward_pb2_grpc.RewardStub(grpc.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=ca)))
        refused = call_code(lambda: no_cert.GetInfo(common_pb2.GetInfoRequest(), timeout=5))
        check(refused == grpc.StatusCode.UNAVAILABLE and proc.poll() is None,
              f"mutual TLS: a client without a certificate is refused at the handshake "
              f"(UNAVAILABLE: {refused}) by a server that is still running")
        with_cert = reward_pb2_grpc.RewardStub(grpc.secure_channel(
            address, grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=open(certs["client.key"], "rb").read(),
                certificate_chain=open(certs["client.pem"], "rb").read())))
        check(call_code(lambda: with_cert.GetInfo(common_pb2.GetInfoRequest(), timeout=10))
              == grpc.StatusCode.OK, "mutual TLS: a client with a CA-signed certificate is served")
        stop(proc, "mtls_reward")
        out = subprocess.run([args.reward_service, "--port=0", "--metrics_port=0",
                              f"--tls_cert={certs['server.pem']}"], capture_output=True,
                             text=True, timeout=30)
        check(out.returncode == 2 and "--tls_key" in out.stderr,
              f"a certificate without its key is refused: {out.stderr.strip()}")

        # ---- 4. the learner across TLS and tokens
        rollout, rready = launch(args.rollout_server, "secure_rollout",
                                 [f"--model={model}", "--max_model_len=128",
                                  "--kv_cache_mb=32", f"--tls_cert={certs['server.pem']}",
                                  f"--tls_key={certs['server.key']}",
                                  f"--auth_token_file={token_file}"])
        # The Python server takes no --metrics_port: start it by hand.
        ready_file = os.path.join(work, "secure_python_reward.ready")
        log = open(os.path.join(work, "secure_python_reward.log"), "w")
        reward = subprocess.Popen([sys.executable, os.path.join(
            args.source_dir, "reward_service", "examples", "python_reward_server.py"),
            "--port=0", f"--ready_file={ready_file}",
            f"--tls_cert={certs['server.pem']}", f"--tls_key={certs['server.key']}",
            f"--tls_client_ca={certs['ca.pem']}", f"--auth_token_file={other_token_file}"],
            stdout=log, stderr=subprocess.STDOUT)
        procs.append((reward, "secure_python_reward"))
        deadline = time.time() + 60
        while not os.path.exists(ready_file) and time.time() < deadline:
            time.sleep(0.05)
        wready = json.load(open(ready_file))
        config = os.path.join(work, "secure.yaml")
        with open(config, "w") as f:
            f.write(f"""run: {{name: secure, output_dir: {work}/runs, seed: 1, max_steps: 2}}
model: {{path: {model}, gradient_checkpointing: false}}
lora: {{rank: 4, alpha: 8}}
data: {{train: {work}/demo/data/train.jsonl, instruction: "{{problem}}"}}
rollout:
  address: 127.0.0.1:{rready['grpc_port']}
  prompts_per_step: 2
  group_size: 4
  max_response_tokens: 24
  tls_ca: {certs['ca.pem']}
  token_file: {token_file}
reward:
  address: 127.0.0.1:{wready['grpc_port']}
  tls_ca: {certs['ca.pem']}
  tls_cert: {certs['client.pem']}
  tls_key: {certs['client.key']}
  token_file: {other_token_file}
""")
        learner_log = os.path.join(work, "secure_learner.log")
        with open(learner_log, "w") as f:
            code = subprocess.run([args.learner, "--port=0", "--metrics_port=0",
                                   f"--config={config}"], stdout=f,
                                  stderr=subprocess.STDOUT, timeout=300).returncode
        lines = [json.loads(line) for line in open(os.path.join(work, "runs", "secure",
                                                                 "metrics.jsonl"))
                 if '"reward_mean"' in line] if code == 0 else []
        check(code == 0 and len(lines) == 2,
              f"the learner trains 2 steps over TLS with tokens (exit {code}): "
              + open(learner_log).read()[-600:] * (code != 0))
        status = subprocess.run([args.microrl, "status",
                                 f"--rollout=127.0.0.1:{rready['grpc_port']}",
                                 f"--tls_ca={certs['ca.pem']}",
                                 f"--auth_token_file={token_file}"],
                                capture_output=True, text=True, timeout=30)
        check(status.returncode == 0 and "SERVING" in status.stdout,
              f"microrl status over TLS with the token: {status.stdout.strip()}")
        status = subprocess.run([args.microrl, "status",
                                 f"--rollout=127.0.0.1:{rready['grpc_port']}",
                                 f"--tls_ca={certs['ca.pem']}"],
                                capture_output=True, text=True, timeout=30)
        check(status.returncode != 0 and "token" in status.stdout + status.stderr,
              f"microrl status without the token is denied: {status.stdout.strip()}")
        stop(rollout, "secure_rollout")
        stop(reward, "secure_python_reward")
        leaked = logs_free_of(work, [TOKEN, OTHER_TOKEN])
        check(not leaked, f"no log holds a token (found in {leaked})")

        # ---- 5. adapter loading by path
        adapters = os.path.join(work, "adapters")
        outside = os.path.join(work, "outside")
        os.makedirs(adapters)
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(model)
        peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8,
                                                     target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
        peft_model.save_pretrained(os.path.join(adapters, "good"))
        peft_model.save_pretrained(outside)
        os.symlink(outside, os.path.join(adapters, "escape"))
        os.makedirs(os.path.join(adapters, "sneaky"))
        os.symlink(os.path.join(outside, "adapter_model.safetensors"),
                   os.path.join(adapters, "sneaky", "adapter_model.safetensors"))
        shutil.copy(os.path.join(outside, "adapter_config.json"),
                    os.path.join(adapters, "sneaky"))
        rollout, rready = launch(args.rollout_server, "adapter_rollout",
                                 [f"--model={model}", "--kv_cache_mb=32",
                                  f"--adapter_dir={adapters}"])
        stub = rollout_pb2_grpc.RolloutStub(
            grpc.insecure_channel(f"127.0.0.1:{rready['grpc_port']}"))

        def load(path, version):
            def call():
                stub.LoadAdapter(iter([rollout_pb2.LoadAdapterRequest(
                    header=rollout_pb2.AdapterHeader(version=version, path=path))]),
                    timeout=30)
            return call_code(call)

        check(load("good", 1) == grpc.StatusCode.OK, "an adapter inside --adapter_dir loads")
        for path, code in ((outside, grpc.StatusCode.INVALID_ARGUMENT),
                           ("../outside", grpc.StatusCode.INVALID_ARGUMENT),
                           ("good/../../outside", grpc.StatusCode.INVALID_ARGUMENT),
                           ("escape", grpc.StatusCode.PERMISSION_DENIED),
                           ("sneaky", grpc.StatusCode.PERMISSION_DENIED)):
            got = load(path, 2)
            check(got == code, f"adapter path {path!r}: {got} (want {code})")
        info = stub.GetInfo(common_pb2.GetInfoRequest(), timeout=10)
        check(info.adapter_version == 1, "the first adapter still serves after the refusals")
        stop(rollout, "adapter_rollout")
    finally:
        cleanup(procs, work)
    finish()


if __name__ == "__main__":
    main()
