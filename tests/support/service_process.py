"""Helpers for Python tests that run the project's servers: Python gRPC stubs generated
from proto/, and starting/stopping a server binary through its --ready_file."""
import json
import os
import signal
import subprocess
import sys
import time


def generate_stubs(source_dir, out_dir):
    from grpc_tools import protoc  # only here: the benchmarks run where grpc_tools is absent
    protos = ["proto/common.proto", "proto/rollout.proto", "proto/reward.proto",
              "proto/learner.proto", "proto/health.proto"]
    rc = protoc.main(["protoc", f"--proto_path={source_dir}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}"] + protos)
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out_dir)


def start(binary, work_dir, name, extra_args=()):
    ready = os.path.join(work_dir, name + ".ready")
    log = open(os.path.join(work_dir, name + ".log"), "w")
    proc = subprocess.Popen([binary, "--port=0", "--metrics_port=0", f"--ready_file={ready}",
                             *extra_args], stdout=log, stderr=subprocess.STDOUT)
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
