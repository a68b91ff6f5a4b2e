"""The node groups of the Ray cluster this process is connected to, from the best source
there is, read through public interfaces only:

1. inside a KubeRay pod, the RayCluster itself (kuberay_api.py): the largest cluster it
   allows, final (`may_grow` False);
2. anywhere else, `ray.nodes()`: the nodes alive now, one group per resource shape. An
   autoscaler may still add nodes, so a problem found there is only a warning (`may_grow`).

Ray 2.60 has no public call that returns the autoscaler's node types with their max counts:
the GCS keeps them, but only a private module of Ray reads them; `ray.autoscaler.sdk` can request
resources but not list node types, and `ray.autoscaler.v2.sdk.get_cluster_status` (not marked
public) lists nodes and demand, not limits. So outside KubeRay the check knows the nodes
alive now and nothing more. (`ray.nodes()` is Ray's documented DeveloperAPI.)
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.capacity import kuberay_api
from cluster.capacity.groups import NodeGroup, groups_from_ray_nodes
from cluster.capacity.manifests import groups_from_raycluster


@dataclass(frozen=True)
class LiveCluster:
    groups: list[NodeGroup]
    source: str  # says where the groups came from, for messages
    may_grow: bool  # True when only the nodes alive now are known: a problem may not be final


def live_groups() -> LiveCluster:
    """The node groups of the connected cluster: the RayCluster's inside KubeRay, else the
    nodes alive now."""
    manifest = kuberay_api.kuberay_manifest()
    if manifest is not None:
        name = manifest["metadata"]["name"]
        return LiveCluster(groups_from_raycluster(manifest), f"the largest cluster RayCluster {name} allows",
                           may_grow=False)
    import ray

    return LiveCluster(groups_from_ray_nodes(ray.nodes()), "the cluster as it is now", may_grow=True)
