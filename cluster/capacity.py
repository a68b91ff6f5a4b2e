"""Does a run fit its cluster? A check made before anything starts, from the settings and a
description of the cluster's node groups:

    problems = check_capacity(settings, groups_from_raycluster(yaml.safe_load(manifest)))
    live = live_groups()                                                # inside a Ray job
    problems = check_capacity(settings, live.groups, source=live.source)

A node group is one kind of node and the most of it the cluster may have: a KubeRay worker
group (maxReplicas x numOfHosts pods, each a Ray node) or, on a live cluster, a node type of
the autoscaler or the nodes alive now. Resources are Ray's logical ones (CPU, GPU, memory in
bytes, custom resources), as the scheduler and the autoscaler count them.

What has to fit at the same time (see jobs/self_lengthen.py):
  synthesis  the served roles at max_replicas (Serve LLM places one bundle per replica: the
             role's `resources` plus 1 CPU for the replica actor) and the Ray Data shard
             workers (0.25 CPU each). In serving.mode lora one deployment holds both roles,
             sized by serving.generator; in full mode each role has its own.
  training   training.num_workers x resources_per_worker (GPU: 1 added when use_gpu), one
             role after the other. With serving.release_during_training the models are down
             while training runs; without it they stay up, scaled down to min_replicas while
             idle (Serve shrinks idle deployments), and training has to fit beside them.
The probe and the hand-off run the served roles only, a subset of synthesis.
`jobs.serve` (the RayService) runs the Generator's deployment alone: workload "serve".
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal

from cluster.settings import RoleServing, Settings

# Ray Serve LLM adds the replica actor (num_cpus 1 by default) to the first bundle of a replica.
REPLICA_ACTOR_CPU = 1.0
# jobs/synthesize.py: each Ray Data shard worker asks for this much CPU.
SHARD_WORKER_CPU = 0.25
# A group whose size the autoscaler does not bound (max_count -1) is counted as this many nodes.
UNBOUNDED = 10_000
GIB = 1024**3


@dataclass(frozen=True)
class NodeGroup:
    name: str
    max_count: int  # the most nodes of this kind the cluster can have
    resources: dict[str, float]  # Ray resources of one node

    def describe(self, resource: str) -> str:
        count = "unbounded" if self.max_count >= UNBOUNDED else self.max_count
        return f"group {self.name}: maxReplicas {count} x {fmt_amount(resource, self.resources.get(resource, 0))}"


@dataclass(frozen=True)
class Demand:
    what: str  # e.g. "workers", "generator replicas"
    count: int
    bundle: dict[str, float]  # resources of one, placed on a single node


@dataclass(frozen=True)
class Phase:
    name: str
    demands: list[Demand] = field(default_factory=list)


# -- what a run asks for ------------------------------------------------------------------
def replica_bundle(role: RoleServing) -> dict[str, float]:
    bundle = {k: float(v) for k, v in role.resources.items() if v}
    bundle["CPU"] = bundle.get("CPU", 0.0) + REPLICA_ACTOR_CPU
    return bundle


def worker_bundle(settings: Settings) -> dict[str, float]:
    """As Ray Train's ScalingConfig does it: zero amounts dropped, GPU 1 when use_gpu."""
    t = settings.training
    bundle = {k: float(v) for k, v in t.resources_per_worker.items() if v}
    if t.use_gpu:
        bundle.setdefault("GPU", 1.0)
    return bundle


def served_deployments(settings: Settings) -> dict[str, RoleServing]:
    s = settings.serving
    if s.mode == "lora":  # one engine, the base model with an adapter per role
        return {"generator+extender": s.generator}
    return {"generator": s.generator, "extender": s.extender}


def phases(settings: Settings, workload: str = "loop") -> list[Phase]:
    """The sets of bundles that must be placed at the same time, one Phase per set."""
    if workload == "serve":
        role = settings.serving.generator
        return [Phase("serving the Generator", [Demand("generator replicas", role.max_replicas, replica_bundle(role))])]
    training = [Demand("workers", settings.training.num_workers, worker_bundle(settings))]
    if workload == "train":
        return [Phase("training", training)]
    if workload != "loop":
        raise ValueError(f"unknown workload {workload!r}: 'loop', 'serve' or 'train'")
    deployments = served_deployments(settings)
    synthesis = [Demand(f"{name} replicas", role.max_replicas, replica_bundle(role))
                 for name, role in deployments.items()]
    synthesis.append(Demand("Ray Data shard workers", settings.synthesis.workers, {"CPU": SHARD_WORKER_CPU}))
    if not settings.serving.release_during_training:
        training += [Demand(f"idle {name} replicas", role.min_replicas, replica_bundle(role))
                     for name, role in deployments.items() if role.min_replicas]
    return [Phase("synthesis", synthesis), Phase("training", training)]


# -- the check ------------------------------------------------------------------------------
def check_capacity(settings: Settings, groups: list[NodeGroup], workload: str = "loop",
                   source: str = "the cluster") -> list[str]:
    """Problems that keep the run from ever getting the resources it asks for; [] if it fits.
    `source` names the cluster in messages, e.g. "the largest cluster the manifests describe"."""
    problems = []
    for phase in phases(settings, workload):
        problems += check_phase(phase, groups, source)
    return problems


def check_phase(phase: Phase, groups: list[NodeGroup], source: str) -> list[str]:
    demands = [d for d in phase.demands if d.count > 0]
    too_big = [d for d in demands if not any(fits(d.bundle, g.resources) for g in groups if g.max_count > 0)]
    if too_big:
        return [f"{phase.name}: one of the {d.what} needs {fmt_bundle(d.bundle)} on a single node, but no "
                f"node of {source} is that large ({largest_nodes(groups)})" for d in too_big]

    problems = []
    asked = describe_demands(demands)
    for resource in sorted({r for d in demands for r in d.bundle}, key=resource_order):
        need = sum(d.count * d.bundle.get(resource, 0) for d in demands)
        have = sum(g.max_count * g.resources.get(resource, 0) for g in groups)
        if need > have + 1e-9:
            offering = "; ".join(g.describe(resource) for g in groups if g.resources.get(resource, 0)) or "no group has any"
            problems.append(f"{phase.name} needs {asked} = {fmt_amount(resource, need)}, but {source} has "
                            f"{fmt_amount(resource, have)} ({offering})")
    if problems:
        return problems

    unplaced = pack(demands, groups)
    if unplaced:
        d, placed = unplaced
        return [f"{phase.name} needs {asked}: the totals fit, but the bundles do not pack onto the nodes of "
                f"{source}: {placed} of {d.count} {d.what} placed, then no node had {fmt_bundle(d.bundle)} "
                f"free ({largest_nodes(groups)})"]
    return []


def fits(bundle: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(r, 0) + 1e-9 >= amount for r, amount in bundle.items())


def pack(demands: list[Demand], groups: list[NodeGroup]) -> tuple[Demand, int] | None:
    """First-fit decreasing onto nodes opened as needed, up to each group's max_count.
    Returns (the demand that ran out of room, how many of it were placed), or None."""
    order = sorted(demands, key=lambda d: (d.bundle.get("GPU", 0), d.bundle.get("CPU", 0), d.bundle.get("memory", 0)),
                   reverse=True)
    nodes: list[dict[str, float]] = []
    opened = {g.name: 0 for g in groups}
    for d in order:
        for placed in range(d.count):
            node = next((n for n in nodes if fits(d.bundle, n)), None)
            if node is None:
                node = open_node(d.bundle, groups, opened)
                if node is None:
                    return d, placed
                nodes.append(node)
            for r, amount in d.bundle.items():
                node[r] -= amount
    return None


def open_node(bundle: dict[str, float], groups: list[NodeGroup], opened: dict[str, int]) -> dict[str, float] | None:
    """A fresh node from the group the autoscaler would pick: one that can hold the bundle,
    without GPUs when the bundle needs none, else the smallest."""
    candidates = [g for g in groups if opened[g.name] < g.max_count and fits(bundle, g.resources)]
    if not candidates:
        return None
    wants_gpu = bundle.get("GPU", 0) > 0
    best = min(candidates, key=lambda g: (not wants_gpu and g.resources.get("GPU", 0) > 0,
                                          g.resources.get("GPU", 0), g.resources.get("CPU", 0)))
    opened[best.name] += 1
    return dict(best.resources)


# -- formatting -----------------------------------------------------------------------------
def fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def fmt_amount(resource: str, amount: float) -> str:
    if resource == "memory":
        return f"{amount / GIB:g} GiB memory"
    return f"{fmt_number(amount)} {resource}"


def resource_order(resource: str) -> tuple[int, str]:
    return {"GPU": 0, "CPU": 1, "memory": 2}.get(resource, 3), resource


def fmt_bundle(bundle: dict[str, float]) -> str:
    parts = []
    for r, amount in sorted(bundle.items(), key=lambda kv: resource_order(kv[0])):
        value = f"{amount / GIB:g}Gi" if r == "memory" else fmt_number(amount)
        parts.append(f"{r}: {value}")
    return "{" + ", ".join(parts) + "}"


def describe_demands(demands: list[Demand]) -> str:
    return " + ".join(f"{d.count} {d.what} x {fmt_bundle(d.bundle)}" for d in demands)


def largest_nodes(groups: list[NodeGroup]) -> str:
    return "; ".join(f"{g.name}: {fmt_bundle(g.resources)} per node" for g in groups) or "no node groups"


# -- node groups from a KubeRay manifest ----------------------------------------------------
# Kubernetes quantity suffixes (binary and decimal); "m" is milli.
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
           "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("500m", "96Gi", "8", 1e3) as a number."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.groups()
    return Decimal(number) * Decimal(_SUFFIX[suffix or ""])


def round_up(value: str | int | float) -> int:
    return int(parse_quantity(value).to_integral_value(rounding=ROUND_UP))


def group_resources(spec: dict, name: str) -> dict[str, float]:
    """The Ray resources of one pod of a head or worker group, as KubeRay and the Ray
    autoscaler derive them: the group's `resources` field first, then rayStartParams
    (num-cpus, num-gpus, memory, resources), then the Ray container's limits, then requests."""
    overrides = spec.get("resources") or {}
    params = spec.get("rayStartParams") or {}
    container = spec["template"]["spec"]["containers"][0].get("resources") or {}
    limits, requests = container.get("limits") or {}, container.get("requests") or {}

    def first(*values) -> int | None:
        return next((round_up(v) for v in values if v is not None), None)

    cpu = first(overrides.get("CPU"), params.get("num-cpus"), limits.get("cpu"), requests.get("cpu"))
    if cpu is None:
        raise ValueError(f"group {name}: no CPU count (set num-cpus or the Ray container's cpu limit)")
    gpu = first(overrides.get("GPU"), params.get("num-gpus"),
                *(v for k, v in [*limits.items(), *requests.items()] if k.endswith("gpu")))
    memory = first(overrides.get("memory"), params.get("memory"), limits.get("memory"), requests.get("memory"))
    resources: dict[str, float] = {"CPU": cpu, "GPU": gpu or 0, "memory": memory or 0}
    if overrides:
        resources.update({k: round_up(v) for k, v in overrides.items() if k not in ("CPU", "GPU", "TPU", "memory")})
    elif "resources" in params:  # '"{\\"custom\\": 1}"', quoted as KubeRay wants it
        resources.update(json.loads(params["resources"].strip("'\"").replace("\\", "")))
    return {k: v for k, v in resources.items() if v}


def cluster_spec(manifest: dict) -> dict:
    """The RayCluster spec of a RayCluster, RayJob (rayClusterSpec) or RayService (rayClusterConfig)."""
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}
    if kind not in key:
        raise ValueError(f"expected a RayCluster, RayJob or RayService manifest, got kind {kind!r}")
    spec = spec if key[kind] is None else spec.get(key[kind])
    if not spec:
        raise ValueError(f"{kind} {manifest.get('metadata', {}).get('name')!r} describes no cluster of its own")
    return spec


def groups_from_raycluster(manifest: dict) -> list[NodeGroup]:
    """Node groups of the largest cluster a manifest allows: the head, and every worker group
    at maxReplicas x numOfHosts (a suspended group at 0)."""
    spec = cluster_spec(manifest)
    groups = [NodeGroup("head", 1, group_resources(spec["headGroupSpec"], "head"))]
    for g in spec.get("workerGroupSpecs") or []:
        count = 0 if g.get("suspend") else int(g["maxReplicas"]) * int(g.get("numOfHosts", 1))
        groups.append(NodeGroup(g["groupName"], count, group_resources(g, g["groupName"])))
    return groups


# -- node groups from a live Ray cluster ----------------------------------------------------
def _requestable(resources: dict) -> dict[str, float]:
    """Drop what no task or bundle asks for: node:<ip> markers and the object store."""
    return {k: float(v) for k, v in resources.items()
            if v and not k.startswith("node:") and k != "object_store_memory"}


def groups_from_ray_nodes(nodes: list[dict]) -> list[NodeGroup]:
    """The nodes alive now (the output of `ray.nodes()`), one group per resource shape."""
    shapes: dict[tuple, int] = {}
    for node in nodes:
        if node.get("Alive", node.get("alive", True)):
            shape = tuple(sorted(_requestable(node.get("Resources") or {}).items()))
            shapes[shape] = shapes.get(shape, 0) + 1
    return [NodeGroup(f"nodes-{i + 1}", count, dict(shape)) for i, (shape, count) in enumerate(shapes.items())]


def groups_from_autoscaler(node_group_configs: list[dict]) -> list[NodeGroup]:
    """The autoscaler's node types ({name, resources, max_count}; max_count -1 is unbounded)."""
    groups = []
    for g in node_group_configs:
        count = UNBOUNDED if g["max_count"] < 0 else int(g["max_count"])
        groups.append(NodeGroup(g["name"], count, _requestable(g["resources"])))
    return groups


@dataclass(frozen=True)
class LiveCluster:
    groups: list[NodeGroup]
    source: str  # says where the groups came from, for messages
    may_grow: bool  # True when only the nodes alive now are known: a problem may not be final


# Inside a KubeRay pod: the cluster's name (set by KubeRay on every Ray container) and the
# namespace of the pod's service account.
CLUSTER_NAME_ENV = "RAY_CLUSTER_NAME"
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def kuberay_manifest() -> dict | None:
    """The RayCluster this process runs in, read from the Kubernetes API the way KubeRay's
    autoscaler reads it (the head pod's service account may); None anywhere else."""
    name = os.environ.get(CLUSTER_NAME_ENV)
    if not name or not os.path.exists(NAMESPACE_FILE):
        return None
    try:
        from ray.autoscaler._private.kuberay.node_provider import KubernetesHttpApiClient

        with open(NAMESPACE_FILE, encoding="utf-8") as f:
            namespace = f.read().strip()
        return KubernetesHttpApiClient(namespace=namespace).get(f"rayclusters/{name}")
    except Exception:  # noqa: BLE001 - no permission, no API server: fall back to what Ray knows
        return None


def live_groups() -> LiveCluster:
    """The node groups of the Ray cluster this process is connected to, from the best source
    there is: the RayCluster itself (inside KubeRay), else the node types the autoscaler
    reports, else the nodes alive now."""
    import ray

    manifest = kuberay_manifest()
    if manifest is not None:
        name = manifest["metadata"]["name"]
        return LiveCluster(groups_from_raycluster(manifest), f"the largest cluster RayCluster {name} allows",
                           may_grow=False)
    nodes = ray.nodes()
    config = None
    try:  # no public API for the autoscaler's node types yet; Ray Data reads them the same way
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older or embedded Ray without the call
        config = None
    if config is not None and len(config.node_group_configs):
        groups = groups_from_autoscaler([{"name": g.name, "resources": dict(g.resources), "max_count": g.max_count}
                                         for g in config.node_group_configs])
        head = [n for n in nodes if n.get("Alive") and "node:__internal_head__" in (n.get("Resources") or {})]
        head_groups = [NodeGroup("head", 1, g.resources) for g in groups_from_ray_nodes(head)]
        return LiveCluster(head_groups + [g for g in groups if g.max_count > 0],
                           "the largest cluster the autoscaler may build", may_grow=False)
    return LiveCluster(groups_from_ray_nodes(nodes), "the cluster as it is now", may_grow=True)


class CapacityError(RuntimeError):
    """The settings ask for more than the cluster can ever give."""


def require_fit(settings: Settings, workload: str = "loop", embedded: bool = False) -> list[str]:
    """Check the connected cluster before anything starts. Raises CapacityError when the
    settings can never fit (an embedded Ray cannot grow either); returns warnings when only
    the nodes alive now are known and an autoscaler may still add some."""
    live = live_groups()
    problems = check_capacity(settings, live.groups, workload=workload, source=live.source)
    if problems and (embedded or not live.may_grow):
        raise CapacityError("the settings do not fit the cluster:\n  " + "\n  ".join(problems))
    return problems


def connect_checked(settings: Settings, workload: str, log=print) -> None:
    """Start or join Ray, then check that `workload` fits it: the one way every job begins.
    A cluster that can never fit stops the job (exit 2, the message on stderr); one that an
    autoscaler may still grow gets a warning."""
    import sys

    from cluster.ray_cluster import connect, embedded

    log(connect(settings))
    try:
        for warning in require_fit(settings, workload, embedded=embedded(settings)):
            log(f"WARNING (the autoscaler may still add nodes): {warning}")
    except CapacityError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
