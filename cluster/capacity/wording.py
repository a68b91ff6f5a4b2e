"""How amounts, bundles and node groups read in the capacity check's messages, e.g.
`{GPU: 1, CPU: 7}` or `96 GiB memory`. Memory is in bytes, as Ray counts it."""

from __future__ import annotations

GIB = 1024**3


def fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def fmt_amount(resource: str, amount: float) -> str:
    if resource == "memory":
        return f"{amount / GIB:g} GiB memory"
    return f"{fmt_number(amount)} {resource}"


def resource_order(resource: str) -> tuple[int, str]:
    """GPU, CPU and memory first, then custom resources by name."""
    return {"GPU": 0, "CPU": 1, "memory": 2}.get(resource, 3), resource


def fmt_bundle(bundle: dict[str, float]) -> str:
    parts = []
    for r, amount in sorted(bundle.items(), key=lambda kv: resource_order(kv[0])):
        value = f"{amount / GIB:g}Gi" if r == "memory" else fmt_number(amount)
        parts.append(f"{r}: {value}")
    return "{" + ", ".join(parts) + "}"


def describe_demands(demands) -> str:
    """`2 generator replicas x {GPU: 1, CPU: 7} + 8 workers x {...}` for a list of Demand."""
    return " + ".join(f"{d.count} {d.what} x {fmt_bundle(d.bundle)}" for d in demands)


def largest_nodes(groups) -> str:
    """One node of each NodeGroup, e.g. `gpu-workers: {GPU: 1, CPU: 12} per node`."""
    return "; ".join(f"{g.name}: {fmt_bundle(g.resources)} per node" for g in groups) or "no node groups"
