"""What a run asks for: the sets of Ray resource bundles that must be placed at the same time.

What has to fit together (see jobs/self_lengthen.py):
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

from dataclasses import dataclass, field

from cluster.settings import RoleServing, Settings

# Ray Serve LLM adds the replica actor (num_cpus 1 by default) to the first bundle of a replica.
REPLICA_ACTOR_CPU = 1.0
# actors/shards.py: every Ray Data shard worker (synthesis, AgentWrite) asks for this much CPU.
SHARD_WORKER_CPU = 0.25


@dataclass(frozen=True)
class Demand:
    what: str  # e.g. "workers", "generator replicas"
    count: int
    bundle: dict[str, float]  # resources of one, placed on a single node


@dataclass(frozen=True)
class Phase:
    name: str
    demands: list[Demand] = field(default_factory=list)


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
