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


def free_port():
    """A loopback TCP port that was free a moment ago."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def consecutive_ports(count):
    """`count` consecutive loopback ports, free a moment ago (servers at base + i)."""
    import socket
    while True:
        base = free_port()
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


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


def cleanup(procs, work):
    """A test's last step: SIGKILLs whatever of [(proc, name)] still runs (None entries
    skipped), then removes its work directory."""
    import shutil
    for proc, _ in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(work, ignore_errors=True)


def remove_work(work, keep):
    """A test's work directory goes at the end, unless --keep asked to keep it."""
    if keep:
        print(f"kept {work}")
    else:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


def make_demo(source_dir, out, seed, env=None):
    """The demo's tiny model and data (deploy/demo/make_demo.py) made in `out`, quietly."""
    env = dict(env if env is not None else os.environ, TQDM_DISABLE="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    subprocess.run([sys.executable, os.path.join(source_dir, "deploy", "demo", "make_demo.py"),
                    "--out", out, "--seed", str(seed)],
                   check=True, stdout=subprocess.DEVNULL, env=env)


def required_args(*names):
    """A test's command line: one required --<name> option each; the parsed options."""
    import argparse
    parser = argparse.ArgumentParser()
    for name in names:
        parser.add_argument("--" + name, required=True)
    return parser.parse_args()
