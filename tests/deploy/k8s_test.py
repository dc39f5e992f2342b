"""deploy/k8s/render.py's manifests, rendered for a GPU job (2 pods x 8 GPUs) and a CPU one,
checked against Kubernetes' own JSON schemas (kubernetes-validate, strict: no unknown
fields) for the oldest and newest versions they target, and for what the job needs to
hold together: the headless Service's stable name is the rendezvous address, the
StatefulSet's pods are the nodes and their ordinals the node ranks, each pod asks for
its GPUs and runs as many ranks, the run directory is shared, and every launch_ranks.sh
option the pods use exists. With --rollout_replicas (rollout servers apart, shared by
the ranks): a second headless Service and StatefulSet of that many servers with a
readiness probe, the ranks addressing every one of them by the Service's name, and an
init container that waits until the name resolves to all of them.

  k8s_test.py --source_dir REPO
"""
import os
import subprocess
import sys

import kubernetes_validate
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish  # noqa: E402
from service_process import required_args  # noqa: E402

# 1.28 gave pods the apps.kubernetes.io/pod-index label the manifests read.
VERSIONS = ["1.28.0", "1.37.0"]


def render(source_dir, *args):
    out = subprocess.run([sys.executable, os.path.join(source_dir, "deploy", "k8s", "render.py"),
                          *args], check=True, capture_output=True, text=True).stdout
    return list(yaml.safe_load_all(out))


def validate(label, docs):
    """Every manifest against the schemas of every targeted Kubernetes version."""
    for version in VERSIONS:
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                ok, why = True, ""
            except kubernetes_validate.ValidationError as e:
                ok, why = False, str(e)[:300]
            check(ok, f"{label}: {doc['metadata']['name']} ({doc['kind']}) is valid for "
                  f"Kubernetes {version} {why}")


def launch_flags(source_dir):
    """The options launch_ranks.sh accepts (its case patterns)."""
    text = open(os.path.join(source_dir, "deploy", "launch_ranks.sh")).read()
    return {line.strip().split("=")[0] for line in text.splitlines()
            if line.strip().startswith("--") and "=*)" in line}


def main():
    args = required_args("source_dir")
    common = ["--image", "registry.example/microrl:1", "--config", "/runs/run.yaml",
              "--model_claim", "models", "--model_subpath", "Qwen2.5-1.5B-Instruct",
              "--runs_claim", "microrl-runs"]
    known = launch_flags(args.source_dir)
    for label, extra, gpus, ranks in [("GPU", ["--nodes", "2", "--gpus_per_node", "8"], 8, 8),
                                      ("CPU", ["--nodes", "1", "--gpus_per_node", "0",
                                               "--cpu_ranks", "2"], 0, 2)]:
        docs = render(args.source_dir, *common, *extra)
        kinds = [d["kind"] for d in docs]
        check(kinds == ["Service", "StatefulSet"], f"{label}: a Service and a StatefulSet: {kinds}")
        validate(label, docs)
        service, sts = docs
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        container = pod["containers"][0]
        command = container["command"][-1]
        name = sts["metadata"]["name"]
        nodes = int(extra[1])
        check(service["spec"]["clusterIP"] == "None" and spec["serviceName"] ==
              service["metadata"]["name"] == name, f"{label}: the Service is headless and governs "
              "the StatefulSet")
        check(service["spec"]["selector"] == spec["selector"]["matchLabels"] ==
              spec["template"]["metadata"]["labels"], f"{label}: the selectors match the pods")
        check(spec["replicas"] == nodes and f"--nnodes={nodes}" in command,
              f"{label}: one pod per node ({nodes})")
        check(f"--master_addr={name}-0.{name}" in command,
              f"{label}: the rendezvous is pod 0 through the headless Service")
        env = {e["name"]: e for e in container["env"]}
        check("--node_rank=$(NODE_RANK)" in command and
              env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] ==
              "metadata.labels['apps.kubernetes.io/pod-index']",
              f"{label}: the pod's ordinal is its node rank")
        limits = container["resources"]["limits"]
        check(limits.get("nvidia.com/gpu", 0) == gpus and f"--nproc={ranks}" in command and
              (f"--device={'cuda' if gpus else 'cpu'}" in command),
              f"{label}: {gpus} GPUs and {ranks} ranks per pod")
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
                  for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        check(claims["runs"] == "microrl-runs" and mounts["runs"] == "/runs" and
              container["workingDir"] == "/runs", f"{label}: the run directory is shared")
        # launch_ranks.sh's own options come before "--" (the learner's after it).
        launch_part = command.split(" -- ", 1)[0]
        used = {part.split("=")[0] for part in launch_part.split() if part.startswith("--")}
        unknown = used - known
        check(not unknown, f"{label}: every launch_ranks.sh option exists: {sorted(unknown)}")
        syntax = subprocess.run(["bash", "-n", "-c", command.replace("$(", "$(echo ")])
        check(syntax.returncode == 0, f"{label}: the pod's command is valid bash")
    # Rollout servers apart, shared by the ranks.
    docs = render(args.source_dir, *common, "--nodes", "2", "--gpus_per_node", "8",
                  "--rollout_replicas", "4", "--rollout_gpus", "1",
                  "--rollout_flag=--gpu_memory_gib=60")
    kinds = [d["kind"] for d in docs]
    check(kinds == ["Service", "StatefulSet", "Service", "StatefulSet"],
          f"shared servers: the ranks' and the servers' Service and StatefulSet: {kinds}")
    validate("shared servers", docs)
    _, ranks, service, servers = docs
    name = servers["metadata"]["name"]
    pod = servers["spec"]["template"]
    server = pod["spec"]["containers"][0]
    check(service["spec"]["clusterIP"] == "None" and servers["spec"]["serviceName"] ==
          service["metadata"]["name"] == name and service["spec"]["selector"] ==
          servers["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"] and
          not service["spec"].get("publishNotReadyAddresses"),
          "shared servers: a headless Service of the ready servers governs them")
    check(servers["spec"]["replicas"] == 4 and
          server["resources"]["limits"]["nvidia.com/gpu"] == 1 and
          "--gpu_memory_gib=60" in server["command"] and "--port=50051" in server["command"]
          and {p["containerPort"] for p in server["ports"]} == {50051, 9401} and
          "status" in server["readinessProbe"]["exec"]["command"],
          "shared servers: 4 servers of 1 GPU on port 50051, ready once they answer")
    command = ranks["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    launch_part = command.split(" -- ", 1)[0]
    check(f"--rollout_addresses=dns:{name}:50051" in launch_part,
          "shared servers: the ranks address every server by the Service's name")
    used = {part.split("=")[0] for part in launch_part.split() if part.startswith("--")}
    check(not used - known, f"shared servers: every launch_ranks.sh option exists: "
          f"{sorted(used - known)}")
    init = ranks["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
    check(f"getent ahostsv4 {name}" in init and "-ge 4" in init and
          subprocess.run(["bash", "-n", "-c", init]).returncode == 0,
          "shared servers: the ranks start once the name resolves to all 4")
    bad = subprocess.run([sys.executable, os.path.join(args.source_dir, "deploy", "k8s",
                                                       "render.py"), *common, "--nodes", "0"],
                         capture_output=True, text=True)
    check(bad.returncode != 0 and "--nodes" in bad.stderr, "--nodes=0 is refused")
    finish()


if __name__ == "__main__":
    main()
