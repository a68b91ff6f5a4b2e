"""Does a run fit its cluster? A check made before anything starts, from the settings and a
description of the cluster's node groups:

    problems = check_capacity(settings, groups_from_raycluster(yaml.safe_load(manifest)))
    live = live_groups()                                                # inside a Ray job
    problems = check_capacity(settings, live.groups, source=live.source)
    connect_checked(settings, "loop")          # how every job starts: connect, then check

One idea per module:
  demand.py       what a run asks for: the bundles each phase places at the same time
  groups.py       NodeGroup, and node groups from what Ray reports (`ray.nodes()`)
  manifests.py    node groups of a KubeRay RayCluster / RayJob / RayService manifest
  packing.py      check_capacity: bundle sizes, totals, then first-fit decreasing packing
  wording.py      how bundles and amounts read in the messages
  kuberay_api.py  the RayCluster a pod runs in, from the Kubernetes API (and the RBAC it needs)
  live.py         the connected cluster's node groups, through public interfaces only
  gate.py         require_fit / connect_checked: exit 2 when a job can never fit
  gpu_hours.py    the GPU-hours estimate of a run (`python -m bench.gpu_hours`)
"""

from cluster.capacity.demand import REPLICA_ACTOR_CPU, SHARD_WORKER_CPU, Demand, Phase, phases
from cluster.capacity.gate import CapacityError, connect_checked, require_fit
from cluster.capacity.groups import UNBOUNDED, NodeGroup, groups_from_autoscaler, groups_from_ray_nodes
from cluster.capacity.live import LiveCluster, live_groups
from cluster.capacity.manifests import cluster_spec, groups_from_raycluster, parse_quantity
from cluster.capacity.packing import check_capacity

__all__ = [
    "REPLICA_ACTOR_CPU", "SHARD_WORKER_CPU", "UNBOUNDED", "CapacityError", "Demand", "LiveCluster", "NodeGroup",
    "Phase", "check_capacity", "cluster_spec", "connect_checked", "groups_from_autoscaler", "groups_from_ray_nodes",
    "groups_from_raycluster", "live_groups", "parse_quantity", "phases", "require_fit",
]
