"""docker compose for real (ctest label `compose`; `bash deploy/test.sh -L compose`).

Builds the microrl image with deploy/Dockerfile and runs deploy/docker-compose.yml's CPU
demo on this machine's Docker daemon, as a user would:

1. the base image `debian:12`: kept if present, else pulled, else made from Debian's
   archive with debootstrap and `docker import`;
2. `docker build -f deploy/Dockerfile` (the proxy CA certificates of this machine, those of
   /usr/local/share/ca-certificates or $MICRORL_DOCKER_CA_FILE, as the PIP_CA_PEM build
   argument; $PIP_INDEX_URL likewise); its time and the image's size are printed;
3. `docker-compose up` of prepare, reward_service, rollout_server, learner and Prometheus
   (from the microrl image; Grafana's image is not pulled);
4. once the learner has logged --stop_after GRPO steps: Prometheus scrapes all three
   services, and every query of dashboards/microrl.json returns data
   (deploy/check_dashboard.py);
5. `docker-compose stop`: the learner exits 0 within its grace period, and its last logged
   step is checkpointed;
6. `docker-compose up` again: the demo resumes GRPO from that checkpoint and finishes;
   metrics.jsonl has steps 1..N each exactly once, and the report is written.

The compose project is removed at the end (`down -v`) unless --keep is given.

  compose_run_test.py --source_dir REPO [--grpo_steps 80] [--stop_after 4] [--keep]
"""
import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import io
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish, require  # noqa: E402

DEMO = "/workspace/runs/demo"
SERVICES = ["prepare", "reward_service", "rollout_server", "learner", "prometheus"]


def say(message):
    print(f"[compose] {message}", flush=True)


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_image():
    if run(["docker", "image", "inspect", "debian:12"]).returncode == 0:
        say("base image debian:12: present")
        return
    if run(["docker", "pull", "debian:12"]).returncode == 0:
        say("base image debian:12: pulled")
        return
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    require(os.access(debootstrap, os.X_OK),
            "debian:12 cannot be pulled, and debootstrap is installed to make it "
            "(apt-get install debootstrap)")
    root = tempfile.mkdtemp(prefix="microrl-rootfs-")
    try:
        t = time.time()
        proc = run([debootstrap, "--variant=minbase", "bookworm", root,
                    "http://deb.debian.org/debian"])
        require(proc.returncode == 0, "debootstrap makes a Debian 12 root file system" +
                ("" if proc.returncode == 0 else ": " + proc.stderr[-2000:]))
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        importer = subprocess.Popen(["docker", "import", "-", "debian:12"], stdin=tar.stdout,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tar.stdout.close()  # tar sees a broken pipe if the import stops early
        out, err = importer.communicate()
        tar.wait()
        imported = subprocess.CompletedProcess(importer.args, importer.returncode, out, err)
        require(imported.returncode == 0, "docker import makes debian:12" +
                ("" if imported.returncode == 0 else ": " + imported.stderr))
        say(f"base image debian:12: made from Debian's archive in {time.time() - t:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build_image(repo):
    argv = ["docker", "build", "-t", "microrl:latest", "-f", "deploy/Dockerfile"]
    ca_files = ([os.environ["MICRORL_DOCKER_CA_FILE"]] if os.environ.get("MICRORL_DOCKER_CA_FILE")
                else sorted(glob.glob("/usr/local/share/ca-certificates/*.crt")))
    if ca_files:
        pem = "".join(open(f).read().strip() + "\n" for f in ca_files)
        argv += ["--build-arg", f"PIP_CA_PEM={pem}"]
        say(f"passing {len(ca_files)} CA file(s) to the build: {' '.join(ca_files)}")
    if os.environ.get("PIP_INDEX_URL"):
        argv += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
    t = time.time()
    with open(os.path.join(tempfile.gettempdir(), "microrl-docker-build.log"), "w") as log:
        proc = subprocess.run(argv + ["."], cwd=repo, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - t
    require(proc.returncode == 0, f"docker build -f deploy/Dockerfile succeeds (log: {log.name})")
    size = int(run(["docker", "image", "inspect", "-f", "{{.Size}}", "microrl:latest"])
               .stdout.strip())
    say(f"FIGURE image build {seconds:.0f} s (layers the daemon had cached are reused); "
        f"image size {size / 2**30:.2f} GiB ({size} bytes)")
    return seconds, size


class Compose:
    def __init__(self, repo, project, env):
        self.base = ["docker-compose", "-p", project, "-f",
                     os.path.join(repo, "deploy", "docker-compose.yml")]
        self.env = env
        self.cwd = os.path.join(repo, "deploy")

    def __call__(self, *args, check_rc=True):
        proc = run(self.base + list(args), env=self.env, cwd=self.cwd)
        if check_rc:
            require(proc.returncode == 0, f"docker-compose {' '.join(args)}" +
                    ("" if proc.returncode == 0 else ": " + proc.stderr[-3000:]))
        return proc

    def container(self, service):
        ids = self("ps", "-q", service).stdout.split()
        require(len(ids) == 1, f"one {service} container ({ids})")
        return ids[0]


def inspect(container, field):
    return run(["docker", "inspect", "-f", "{{" + field + "}}", container]).stdout.strip()


def read_file(container, path):
    """A file of a container (running or not), or None."""
    proc = subprocess.run(["docker", "cp", f"{container}:{path}", "-"], capture_output=True)
    if proc.returncode != 0:
        return None
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        member = tar.next()
        return tar.extractfile(member).read().decode() if member and member.isfile() else None


def list_dir(container, path):
    proc = subprocess.run(["docker", "cp", f"{container}:{path}", "-"], capture_output=True)
    if proc.returncode != 0:
        return []
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        return sorted({m.name.split("/")[1] for m in tar.getmembers() if m.name.count("/") >= 1})


def steps_of(text):
    steps = []
    for line in (text or "").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "reward_mean" in record and "step" in record:
            steps.append(record["step"])
    return steps


def logs(compose, service, lines=40):
    return compose("logs", "--no-color", "--tail", str(lines), service, check_rc=False).stdout


def wait_for_steps(compose, count, timeout):
    deadline = time.time() + timeout
    learner = compose.container("learner")
    while time.time() < deadline:
        steps = steps_of(read_file(learner, f"{DEMO}/runs/grpo/metrics.jsonl"))
        if len(steps) >= count:
            return steps
        if inspect(learner, ".State.Status") != "running":
            break
        time.sleep(3)
    print(logs(compose, "learner"))
    require(False, f"the learner logs {count} GRPO steps within {timeout} s")


def prometheus_targets(url, timeout=90):
    deadline = time.time() + timeout
    health = {}
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=5) as r:
                targets = json.load(r)["data"]["activeTargets"]
            health = {}
            for t in targets:
                health.setdefault(t["labels"]["job"], []).append(t["health"])
            if all(health.get(job) and all(h == "up" for h in health[job])
                   for job in ("learner", "reward_service", "rollout_server")):
                return health
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(2)
    return health


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source_dir", required=True)
    parser.add_argument("--grpo_steps", type=int, default=80)
    parser.add_argument("--stop_after", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="leave the compose project up")
    args = parser.parse_args()
    repo = os.path.abspath(args.source_dir)
    started = time.time()

    require(shutil.which("docker") is not None and shutil.which("docker-compose") is not None,
            "docker and docker-compose are installed")
    info = run(["docker", "info", "-f", "{{.ServerVersion}}"])
    require(info.returncode == 0, "the Docker daemon answers (start it: dockerd &)" +
            ("" if info.returncode == 0 else ": " + info.stderr.strip()))
    base_image()
    build_seconds, image_size = build_image(repo)

    port = free_port()
    project = f"microrl-compose-test-{os.getpid()}"
    env = dict(os.environ, MICRORL_PROMETHEUS_PORT=str(port),
               MICRORL_DEMO_ARGS=(f"--quick --grpo_steps={args.grpo_steps} "
                                  "--eval_problems=20 --eval_samples=2"))
    compose = Compose(repo, project, env)
    prometheus = f"http://127.0.0.1:{port}"
    try:
        t = time.time()
        compose("up", "-d", *SERVICES)
        steps = wait_for_steps(compose, args.stop_after, timeout=1200)
        say(f"FIGURE up to {len(steps)} GRPO steps logged: {time.time() - t:.0f} s")

        health = prometheus_targets(prometheus)
        check(all(health.get(job) and all(h == "up" for h in health[job])
                  for job in ("learner", "reward_service", "rollout_server")),
              f"Prometheus scrapes learner, reward_service and rollout_server ({health})")
        dashboard = run([sys.executable, os.path.join(repo, "deploy", "check_dashboard.py"),
                         "--prometheus", prometheus, "--wait", "90"])
        print(dashboard.stdout[-3000:] + dashboard.stderr[-2000:])
        check(dashboard.returncode == 0,
              "every query of dashboards/microrl.json returns data from the compose Prometheus")

        learner = compose.container("learner")
        now_steps = steps_of(read_file(learner, f"{DEMO}/runs/grpo/metrics.jsonl"))
        require(len(now_steps) < args.grpo_steps,
                f"GRPO is still running when the stop comes ({len(now_steps)} of "
                f"{args.grpo_steps} steps; give --grpo_steps more)")
        t = time.time()
        compose("stop")
        stop_seconds = time.time() - t
        status, code = inspect(learner, ".State.Status"), inspect(learner, ".State.ExitCode")
        say(f"FIGURE docker-compose stop: {stop_seconds:.1f} s")
        check(status == "exited" and code == "0",
              f"the learner exited 0 on docker-compose stop ({status}, exit code {code})")
        check(stop_seconds < 300, f"within the learner's 5 min grace period ({stop_seconds:.0f} s)")
        learner_log = logs(compose, "learner", 30)
        check("stopped (SIGTERM)" in learner_log, "the demo says it was stopped by SIGTERM")
        stopped_steps = steps_of(read_file(learner, f"{DEMO}/runs/grpo/metrics.jsonl"))
        last = max(stopped_steps) if stopped_steps else 0
        checkpoints = sorted(int(n[len("step_"):]) for n in
                             list_dir(learner, f"{DEMO}/runs/grpo/checkpoints")
                             if n.startswith("step_") and n[len("step_"):].isdigit())
        say(f"stopped after step {last}; checkpoints of steps {checkpoints}")
        check(last >= args.stop_after and last in checkpoints,
              f"the last logged step ({last}) is checkpointed ({checkpoints})")
        check(last < args.grpo_steps, f"the stop came before the run's end ({last} < "
              f"{args.grpo_steps}), so the restart has steps to resume")

        t = time.time()
        compose("up", "-d", *SERVICES)
        learner = compose.container("learner")
        deadline = time.time() + 1200
        while time.time() < deadline and inspect(learner, ".State.Status") == "running":
            time.sleep(3)
        resume_seconds = time.time() - t
        code = inspect(learner, ".State.ExitCode")
        learner_log = logs(compose, "learner", 60)
        print(learner_log)
        say(f"FIGURE second up, resume to the end of the demo: {resume_seconds:.0f} s")
        check(inspect(learner, ".State.Status") == "exited" and code == "0",
              f"the resumed demo ran to its end and exited 0 (exit code {code})")
        check("warm-up: done by an earlier start" in learner_log,
              "the warm-up finished before the stop is not run again")
        check("resuming" in learner_log, "GRPO resumes from its checkpoint")
        final = steps_of(read_file(learner, f"{DEMO}/runs/grpo/metrics.jsonl"))
        check(final == list(range(1, args.grpo_steps + 1)),
              f"metrics.jsonl has steps 1..{args.grpo_steps}, each exactly once ({final})")
        summary = read_file(learner, f"{DEMO}/summary.json")
        check(summary is not None and "after" in json.loads(summary),
              "the demo wrote its summary (before/after evaluation)")
        check(read_file(learner, f"{DEMO}/runs/grpo/report/index.html") is not None,
              "the demo wrote its report")
    finally:
        if args.keep:
            say(f"kept: docker-compose -p {project} -f deploy/docker-compose.yml down -v")
        else:
            compose("down", "-v", "--remove-orphans", check_rc=False)
    say(f"FIGURE whole test {time.time() - started:.0f} s (image build {build_seconds:.0f} s, "
        f"image {image_size / 2**30:.2f} GiB)")
    finish()


if __name__ == "__main__":
    main()
