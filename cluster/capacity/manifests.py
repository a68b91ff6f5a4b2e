"""Node groups of a KubeRay manifest (RayCluster, RayJob or RayService), as a dict from
`yaml.safe_load` or from the Kubernetes API: the head, and every worker group at its largest
(maxReplicas x numOfHosts pods). A pod's Ray resources are derived the way KubeRay and the
Ray autoscaler derive them (tests/test_k8s.py compares the two).
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_UP, Decimal

from cluster.capacity.groups import NodeGroup

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
    """The Ray resources of one pod of a head or worker group: the group's `resources` field
    first, then rayStartParams (num-cpus, num-gpus, memory, resources), then the Ray
    container's limits, then its requests."""
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
