"""Node groups: one kind of node and the most of it a cluster may have. A KubeRay worker group
(maxReplicas x numOfHosts pods, each a Ray node, see manifests.py), a node type of the Ray
autoscaler, or the nodes of one resource shape alive now. Resources are Ray's logical ones
(CPU, GPU, memory in bytes, custom resources), as the scheduler and the autoscaler count them.

This module turns what Ray reports into groups; it reads nothing itself (live.py does)."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.capacity.wording import fmt_amount

# A group whose size the autoscaler does not bound (max_count -1) is counted as this many nodes.
UNBOUNDED = 10_000


@dataclass(frozen=True)
class NodeGroup:
    name: str
    max_count: int  # the most nodes of this kind the cluster can have
    resources: dict[str, float]  # Ray resources of one node

    def describe(self, resource: str) -> str:
        count = "unbounded" if self.max_count >= UNBOUNDED else self.max_count
        return f"group {self.name}: maxReplicas {count} x {fmt_amount(resource, self.resources.get(resource, 0))}"


def requestable(resources: dict) -> dict[str, float]:
    """Drop what no task or bundle asks for: node:<ip> markers and the object store."""
    return {k: float(v) for k, v in resources.items()
            if v and not k.startswith("node:") and k != "object_store_memory"}


def groups_from_ray_nodes(nodes: list[dict]) -> list[NodeGroup]:
    """The nodes alive now (the output of `ray.nodes()`), one group per resource shape."""
    shapes: dict[tuple, int] = {}
    for node in nodes:
        if node.get("Alive", node.get("alive", True)):
            shape = tuple(sorted(requestable(node.get("Resources") or {}).items()))
            shapes[shape] = shapes.get(shape, 0) + 1
    return [NodeGroup(f"nodes-{i + 1}", count, dict(shape)) for i, (shape, count) in enumerate(shapes.items())]


def groups_from_autoscaler(node_types: list[dict]) -> list[NodeGroup]:
    """Node types as the Ray autoscaler describes them ({name, resources, max_count};
    max_count -1 is unbounded)."""
    groups = []
    for g in node_types:
        count = UNBOUNDED if g["max_count"] < 0 else int(g["max_count"])
        groups.append(NodeGroup(g["name"], count, requestable(g["resources"])))
    return groups
