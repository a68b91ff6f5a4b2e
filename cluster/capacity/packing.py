"""Does each phase of a run fit the node groups? Three checks, the first that fails is reported:

1. every bundle fits on one node of some group (else no amount of scaling helps);
2. the totals: each resource asked for at once against what the groups hold at their largest;
3. the bundles themselves, packed first-fit decreasing onto nodes opened as the autoscaler
   would open them, up to each group's max_count (totals can fit while bundles do not pack).
"""

from __future__ import annotations

from cluster.capacity.demand import Demand, Phase, phases
from cluster.capacity.groups import NodeGroup
from cluster.capacity.wording import describe_demands, fmt_amount, fmt_bundle, largest_nodes, resource_order
from cluster.settings import Settings


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
