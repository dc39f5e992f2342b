"""Renders Kubernetes manifests for data-parallel training (docs/scaling.md, Mode A): a
headless Service and a StatefulSet of node-sized pods. Pod k runs deploy/launch_ranks.sh
as node k of N: a rollout server per GPU, a reward service on loopback, and the node's
learner ranks under torchrun, whose static rendezvous is pod 0 (reached through the
headless Service's stable name <name>-0.<name>). Checkpoints go to a volume every pod
mounts (ReadWriteMany); the model comes from a read-only one.

With --rollout_replicas M (Modes A and B together) the rollout servers run apart: a
second headless Service and StatefulSet, <name>-rollout, of M pods with one rollout
server each (--rollout_gpus GPUs), and the learner pods' ranks share them
(launch_ranks.sh --rollout_addresses=dns:<name>-rollout:50051: every ready server the
name resolves to when the ranks start; an init container waits until all M are).

  python deploy/k8s/render.py --nodes 2 --gpus_per_node 8 --image REGISTRY/microrl:TAG \\
      --config configs/paper/qwen2.5-1.5b-instruct-r64.yaml \\
      --model_claim models --model_subpath Qwen2.5-1.5B-Instruct --runs_claim microrl-runs \\
      > microrl-ranks.yaml
  kubectl apply -f microrl-ranks.yaml

The image is deploy/Dockerfile's (the project in /opt/microrl/src, built). The rendered
manifests are checked against Kubernetes' schemas by tests/deploy/k8s_test.py; they have
not run on a cluster.
"""
import argparse
import sys

import yaml

SRC = "/opt/microrl/src"


def labels_of(component):
    return {"app.kubernetes.io/name": "microrl", "app.kubernetes.io/component": component}


def resources_of(cpu, memory, gpus):
    resources = {"requests": {"cpu": str(cpu), "memory": memory}, "limits": {"memory": memory}}
    if gpus > 0:
        resources["limits"]["nvidia.com/gpu"] = gpus
        resources["requests"]["nvidia.com/gpu"] = gpus
    return resources


def headless_service(name, labels, ports, publish_not_ready=False):
    """A Service without a cluster IP: a DNS name per pod, and the name's A records."""
    spec = {"clusterIP": "None"}
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    spec["selector"] = labels
    spec["ports"] = [{"name": port_name, "port": port, "targetPort": port}
                     for port_name, port in ports]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels}, "spec": spec}


def stateful_set(name, labels, replicas, metrics_port, pod_spec):
    """`replicas` pods of `pod_spec`, started at once, governed by the Service `name`,
    their /metrics on `metrics_port` announced to Prometheus."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            # Every pod at once: the ranks wait for each other at the rendezvous.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true",
                                    "prometheus.io/port": str(metrics_port)},
                },
                "spec": pod_spec,
            },
        },
    }


def models_volume(args):
    return {"name": "models", "persistentVolumeClaim": {"claimName": args.model_claim,
                                                         "readOnly": True}}


def render(args):
    """The manifests as a list of dicts."""
    name = args.name
    labels = labels_of(name)
    gpus = args.gpus_per_node
    rollout_name = f"{name}-rollout"
    shared = args.rollout_replicas > 0
    launch = [
        f"{SRC}/deploy/launch_ranks.sh", f"--nproc={gpus if gpus > 0 else args.cpu_ranks}",
        f"--device={'cuda' if gpus > 0 else 'cpu'}", f"--model=/models/{args.model_subpath}",
        f"--config={args.config}", f"--build_dir={SRC}/build", f"--nnodes={args.nodes}",
        "--node_rank=$(NODE_RANK)", f"--master_addr={name}-0.{name}",
        f"--max_restarts={args.max_restarts}", "--log_dir=/runs/logs/$(POD_NAME)",
        *([f"--rollout_addresses=dns:{rollout_name}:50051"] if shared else []),
        "--", "--host=0.0.0.0", "--insecure_allow_remote",
    ]
    # headless: <pod>.<service> names for the rendezvous
    service = headless_service(name, labels, [("rendezvous", 29500), ("metrics", 9403)],
                               publish_not_ready=True)
    pod = {
        # SIGTERM makes every rank stop after its step and rank 0 save it.
        "terminationGracePeriodSeconds": args.grace_seconds,
        "containers": [{
            "name": "ranks",
            "image": args.image,
            "command": ["bash", "-c", " ".join(launch)],
            "env": [
                # The pod's ordinal is its node rank.
                {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.name"}}},
                {"name": "MASTER_PORT", "value": "29500"},
            ],
            "ports": [{"name": "rendezvous", "containerPort": 29500},
                      {"name": "metrics", "containerPort": 9403}],
            "resources": resources_of(args.cpu, args.memory, gpus),
            "workingDir": "/runs",
            "volumeMounts": [
                {"name": "models", "mountPath": "/models", "readOnly": True},
                {"name": "runs", "mountPath": "/runs"},
                # NCCL and the CUDA IPC hand-off want more than 64 MiB.
                {"name": "shm", "mountPath": "/dev/shm"},
            ],
        }],
        "volumes": [
            models_volume(args),
            {"name": "runs", "persistentVolumeClaim": {"claimName": args.runs_claim}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": args.shm}},
        ],
    }
    statefulset = stateful_set(name, labels, args.nodes, 9403, pod)
    if not shared:
        return [service, statefulset]
    # The ranks start once every rollout server is ready (the headless Service lists
    # ready pods only), so that the name resolves to all of them.
    pod["initContainers"] = [{
        "name": "wait-for-rollout-servers",
        "image": args.image,
        "command": ["bash", "-c",
                    f"until [ $(getent ahostsv4 {rollout_name} | awk '{{print $1}}' | sort -u "
                    f"| wc -l) -ge {args.rollout_replicas} ]; do sleep 2; done"],
    }]
    return [service, statefulset, *rollout_servers(args, rollout_name)]


def rollout_servers(args, name):
    """A headless Service and a StatefulSet of --rollout_replicas rollout servers."""
    labels = labels_of(name)
    gpus = args.rollout_gpus
    server = [f"{SRC}/build/rollout_server/rollout_server", "--host=0.0.0.0",
              "--insecure_allow_remote", "--port=50051", "--metrics_port=9401",
              f"--model=/models/{args.model_subpath}",
              f"--device={'cuda' if gpus > 0 else 'cpu'}", *args.rollout_flag]
    health = [f"{SRC}/build/tools/microrl/microrl", "status", "--rollout=127.0.0.1:50051"]
    # One A record per ready server.
    service = headless_service(name, labels, [("grpc", 50051), ("metrics", 9401)])
    pod = {
        "terminationGracePeriodSeconds": 30,
        "containers": [{
            "name": "rollout-server",
            "image": args.image,
            "command": server,
            "ports": [{"name": "grpc", "containerPort": 50051},
                      {"name": "metrics", "containerPort": 9401}],
            "readinessProbe": {"exec": {"command": health},
                               "periodSeconds": 5, "failureThreshold": 3},
            "resources": resources_of(args.rollout_cpu, args.rollout_memory, gpus),
            "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        }],
        "volumes": [models_volume(args)],
    }
    return [service, stateful_set(name, labels, args.rollout_replicas, 9401, pod)]


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="microrl-ranks")
    p.add_argument("--image", required=True)
    p.add_argument("--nodes", type=int, default=1, help="pods (nodes) in the job")
    p.add_argument("--gpus_per_node", type=int, default=8,
                   help="GPUs (and ranks) per pod; 0: CPU ranks (--cpu_ranks)")
    p.add_argument("--cpu_ranks", type=int, default=2, help="ranks per pod without GPUs")
    p.add_argument("--config", required=True, help="the run's YAML, as the image sees it")
    p.add_argument("--model_claim", required=True, help="PVC holding the model")
    p.add_argument("--model_subpath", required=True, help="the model's directory in it")
    p.add_argument("--runs_claim", required=True,
                   help="ReadWriteMany PVC for run directories (checkpoints)")
    p.add_argument("--max_restarts", type=int, default=1)
    p.add_argument("--cpu", type=int, default=16)
    p.add_argument("--memory", default="256Gi")
    p.add_argument("--shm", default="16Gi")
    p.add_argument("--grace_seconds", type=int, default=300)
    p.add_argument("--rollout_replicas", type=int, default=0,
                   help="rollout servers apart from the ranks, shared by all of them "
                        "(0: one per rank, in the rank's pod)")
    p.add_argument("--rollout_gpus", type=int, default=1, help="GPUs per rollout server pod")
    p.add_argument("--rollout_cpu", type=int, default=8)
    p.add_argument("--rollout_memory", default="64Gi")
    p.add_argument("--rollout_flag", action="append", default=[],
                   help="one more rollout_server flag (repeatable)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.nodes < 1 or args.gpus_per_node < 0 or args.cpu_ranks < 1:
        sys.exit("render.py: --nodes and --cpu_ranks must be >= 1, --gpus_per_node >= 0")
    if args.rollout_replicas < 0 or args.rollout_gpus < 0:
        sys.exit("render.py: --rollout_replicas and --rollout_gpus must be >= 0")
    yaml.safe_dump_all(render(args), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
