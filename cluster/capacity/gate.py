"""The check every job makes as it connects to Ray: does the workload fit the cluster?
A cluster that can never fit stops the job (exit 2); one that an autoscaler may still grow
gets warnings."""

from __future__ import annotations

import sys

from cluster.capacity.live import live_groups
from cluster.capacity.packing import check_capacity
from cluster.settings import Settings


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
    from cluster.ray_cluster import connect, embedded  # imports Ray

    log(connect(settings))
    try:
        for warning in require_fit(settings, workload, embedded=embedded(settings)):
            log(f"WARNING (the autoscaler may still add nodes): {warning}")
    except CapacityError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
