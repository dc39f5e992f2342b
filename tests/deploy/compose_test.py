"""deploy/docker-compose.yml (with and without docker-compose.gpu.yml) is valid for
Debian's docker-compose, and everything it names exists in the project:

- `docker-compose config` accepts both file sets (no Docker daemon needed);
- the image's build context and Dockerfile exist; the Dockerfile starts from Debian 12
  and runs deploy/setup.sh (the README's install path);
- every bind-mounted host path exists in the repository, or is a data directory .env
  names (models, data) and .gitignore keeps out of git;
- every microrl service's command is a role deploy/compose/entrypoint.sh handles,
  and the gRPC/metrics ports it exposes are the ones the entrypoint gives the binary;
- Prometheus scrapes exactly the services and metrics ports of the compose file, every
  rollout_server replica found by DNS, and the learner addresses every replica
  (`--scale rollout_server=N`, Mode B of docs/scaling.md);
- Grafana's provisioning names the Prometheus service and the dashboard file, whose
  datasource it resolves;
- the GPU file reserves a GPU for rollout_server and learner and sets MICRORL_DEVICE;
- every ${VARIABLE} the compose files and the entrypoint read is defined in .env.

  compose_test.py --source_dir REPO [--docker_compose /usr/bin/docker-compose]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import FAILURES, check, finish  # noqa: E402



def compose_config(binary, deploy, files):
    command = [binary]
    for f in files:
        command += ["-f", os.path.join(deploy, f)]
    proc = subprocess.run(command + ["config"], capture_output=True, text=True, cwd=deploy)
    check(proc.returncode == 0,
          f"docker-compose config accepts {' + '.join(files)}" +
          ("" if proc.returncode == 0 else f": {proc.stderr.strip()}"))
    return yaml.safe_load(proc.stdout) if proc.returncode == 0 else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source_dir", required=True)
    parser.add_argument("--docker_compose", default=shutil.which("docker-compose") or "")
    args = parser.parse_args()
    repo = os.path.abspath(args.source_dir)
    deploy = os.path.join(repo, "deploy")
    check(bool(args.docker_compose) and os.access(args.docker_compose, os.X_OK),
          "docker-compose is installed (deploy/setup.sh installs Debian's)")
    if FAILURES:
        sys.exit(1)

    config = compose_config(args.docker_compose, deploy, ["docker-compose.yml"])
    gpu = compose_config(args.docker_compose, deploy,
                         ["docker-compose.yml", "docker-compose.gpu.yml"])
    if config is None or gpu is None:
        sys.exit(1)
    services = config["services"]
    check(set(services) == {"prepare", "reward_service", "rollout_server", "learner",
                            "prometheus", "grafana"},
          f"services: {sorted(services)}")

    env = {}
    with open(os.path.join(deploy, ".env")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    with open(os.path.join(repo, ".gitignore")) as f:
        ignored = {line.strip().strip("/") for line in f if line.strip()}

    # The image.
    built = [s for s in services.values() if "build" in s]
    check(len(built) == 1, "one service builds the microrl image")
    build = built[0]["build"]
    dockerfile = os.path.join(build["context"], build["dockerfile"])
    check(os.path.realpath(build["context"]) == repo and os.path.isfile(dockerfile),
          f"build context is the repository and {build['dockerfile']} exists")
    text = open(dockerfile).read()
    check(re.search(r"^FROM debian:12\b", text, re.M) is not None,
          "the Dockerfile starts from Debian 12")
    check("deploy/setup.sh" in text, "the Dockerfile installs with deploy/setup.sh")
    check(os.path.isfile(os.path.join(repo, ".dockerignore")) and
          "build" in open(os.path.join(repo, ".dockerignore")).read().split(),
          ".dockerignore keeps the local build out of the image")

    # Volumes.
    named = set(config.get("volumes", {}))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if os.path.isabs(source):
                rel = os.path.relpath(source, repo)
                if os.path.exists(source):
                    check(not rel.startswith(".."),
                          f"{name}: mount {rel} exists in the repository")
                else:
                    check(rel in ignored and any(os.path.normpath(
                              os.path.join(deploy, env.get(k, ""))) == source
                              for k in ("MICRORL_MODELS_DIR", "MICRORL_DATA_DIR")),
                          f"{name}: mount {rel} is a data directory from .env, "
                          f"ignored by git")
            else:
                check(source in named, f"{name}: volume {source} is declared")

    # The microrl services' roles and ports.
    entry = open(os.path.join(deploy, "compose", "entrypoint.sh")).read()
    check(subprocess.run(["bash", "-n", os.path.join(deploy, "compose", "entrypoint.sh")])
          .returncode == 0, "entrypoint.sh parses")
    ports = {}
    for name in ("prepare", "reward_service", "rollout_server", "learner"):
        service = services[name]
        check(service.get("image") == "microrl:latest",
              f"{name}: runs the microrl image")
        check(service.get("entrypoint", [])[-1].endswith("deploy/compose/entrypoint.sh"),
              f"{name}: starts through entrypoint.sh")
        role = service["command"][0]
        block = re.search(r"^  " + re.escape(role) + r"\)\n(.*?);;", entry, re.M | re.S)
        check(block is not None, f"{name}: entrypoint.sh handles role {role}")
        if block is None or name == "prepare":
            continue
        flags = dict(re.findall(r"--(port|metrics_port|learner_port|learner_metrics_port)"
                                r"=(\d+)", block.group(1)))
        grpc = flags.get("port") or flags.get("learner_port")
        metrics = flags.get("metrics_port") or flags.get("learner_metrics_port")
        exposed = {str(p) for p in service.get("expose", [])}
        check(grpc is not None and metrics is not None and exposed == {grpc, metrics},
              f"{name}: exposes its gRPC {grpc} and metrics {metrics} ports ({exposed})")
        ports[name] = metrics
        check("--host=0.0.0.0" in block.group(1) or "--learner_host=0.0.0.0" in
              block.group(1), f"{name}: listens on the compose network")
        check("--insecure_allow_remote" in block.group(1) or
              ('"$REMOTE"' in block.group(1) and "REMOTE=--insecure_allow_remote" in entry),
              f"{name}: says explicitly that the compose network is trusted")
        grace = str(service.get("stop_grace_period", ""))
        check(re.fullmatch(r"\d+[sm]", grace) is not None,
              f"{name}: has a stop_grace_period ({grace!r}) for a clean SIGTERM stop")
    for name in ("rollout_server", "learner"):
        depends = services[name].get("depends_on", {})
        check("prepare" in depends, f"{name}: waits for prepare")
    check(str(services["learner"].get("stop_grace_period")) == "5m",
          "the learner gets 5 minutes to save its last step on `docker compose stop`")
    check({"reward_service", "rollout_server"} <= set(services["learner"]["depends_on"]),
          "learner waits for reward_service and rollout_server")
    for addr in re.findall(r"(rollout_server|reward_service):(\d+)", entry):
        check(addr[0] in services and addr[1] in
              {str(p) for p in services[addr[0]].get("expose", [])},
              f"entrypoint's address {addr[0]}:{addr[1]} is an exposed service port")

    # Prometheus.
    prom = services["prometheus"]
    prom_file = [v.split(":")[0] for v in prom["volumes"] if "prometheus.yml" in v][0]
    scrape = yaml.safe_load(open(prom_file))
    targets = {}
    for job in scrape["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.split(":")
                targets[job["job_name"]] = (host, port)
        # Every replica of a scaled service, by its name's A records.
        for dns in job.get("dns_sd_configs", []):
            check(dns.get("type") == "A" and len(dns["names"]) == 1,
                  f"{job['job_name']}: DNS discovery of one name's A records")
            targets[job["job_name"]] = (dns["names"][0], str(dns["port"]))
    check(targets == {n: (n, p) for n, p in ports.items()},
          f"Prometheus scrapes each service's metrics port: {targets}")
    promtool = shutil.which("promtool")  # Debian's prometheus package (setup.sh)
    if promtool:
        proc = subprocess.run([promtool, "check", "config", prom_file], capture_output=True,
                              text=True)
        check(proc.returncode == 0, "promtool accepts compose/prometheus.yml" +
              ("" if proc.returncode == 0 else f": {proc.stdout}{proc.stderr}"))
    check(any(j["job_name"] == "rollout_server" and "dns_sd_configs" in j
              for j in scrape["scrape_configs"]),
          "Prometheus finds every rollout_server replica (--scale) by DNS")
    check("dns:rollout_server:50051" in entry and
          entry.count("dns:rollout_server:50051") == 2,
          "the learner (demo and presets) spreads its groups over every rollout_server "
          "replica (dns:rollout_server:50051)")
    check(any(p.startswith("127.0.0.1:9090:") for p in prom.get("ports", [])),
          "Prometheus is published on 127.0.0.1:9090")

    # Grafana.
    graf = services["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in graf["volumes"]}
    provisioning = mounts.get("/etc/grafana/provisioning")
    check(provisioning is not None and os.path.isdir(provisioning),
          "Grafana's provisioning directory is mounted")
    datasources = yaml.safe_load(open(os.path.join(provisioning, "datasources",
                                                   "prometheus.yml")))["datasources"]
    check(any(d["type"] == "prometheus" and d["url"] == "http://prometheus:9090" and
              d.get("isDefault") for d in datasources),
          "the default datasource is the compose Prometheus")
    providers = yaml.safe_load(open(os.path.join(provisioning, "dashboards",
                                                 "microrl.yml")))["providers"]
    dash_dir = providers[0]["options"]["path"]
    check(dash_dir in mounts and
          os.path.isfile(os.path.join(mounts[dash_dir], "microrl.json")),
          f"the dashboard provider's {dash_dir} holds dashboards/microrl.json")
    dashboard = json.load(open(os.path.join(repo, "dashboards", "microrl.json")))
    check(any(v["type"] == "datasource" and v["query"] == "prometheus"
              for v in dashboard["templating"]["list"]),
          "the dashboard's datasource variable selects a Prometheus datasource")
    home = graf.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
    check(home.startswith(dash_dir) and home.endswith("microrl.json"),
          "Grafana opens the microrl dashboard")

    # GPU.
    for name in ("rollout_server", "learner"):
        s = gpu["services"][name]
        devices = s.get("deploy", {}).get("resources", {}).get("reservations", {}) \
            .get("devices", [])
        check(any("gpu" in d.get("capabilities", []) and d.get("count") == 1
                  for d in devices), f"{name}: the GPU file reserves one GPU")
        check(s.get("environment", {}).get("MICRORL_DEVICE") == "cuda",
              f"{name}: the GPU file sets MICRORL_DEVICE=cuda")
    check("deploy" not in services["rollout_server"],
          "without the GPU file nothing reserves a GPU (runs on CPU)")

    # Variables.
    used = set()
    for f in ("docker-compose.yml", "docker-compose.gpu.yml"):
        used |= set(re.findall(r"\$\{(\w+)", open(os.path.join(deploy, f)).read()))
    used |= {v for v in re.findall(r"\$\{?(MICRORL_\w+)", entry) if v != "MICRORL_VENV"}
    missing = sorted(used - set(env))
    check(not missing, f"every variable used is in .env (missing: {missing})")
    check(os.path.isfile(os.path.join(repo, "configs", "paper",
                                      env.get("MICRORL_PRESET", "") + ".yaml")),
          f".env's MICRORL_PRESET {env.get('MICRORL_PRESET')} is a preset")

    finish()


if __name__ == "__main__":
    main()
