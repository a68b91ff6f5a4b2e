"""The job's own lines: a timestamp, an optional tag, the message, flushed at once (they are
what a person watching the run, or `ray job logs`, reads). Library and engine logs go to files
in the run folder instead (cluster/logs.py).

Progress is printed as lines rather than a redrawn bar (actors/shards.py per shard,
evaluation/generation.py per answer): the same text reads well in a terminal, in `ray job logs`
and in a CI log, none of which agree on carriage returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Log = Callable[[str], None]


def logger(tag: str | None = None) -> Log:
    """A `log(message)` that prints `[HH:MM:SS] [tag] message`."""
    prefix = f"[{tag}] " if tag else ""

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {prefix}{message}", flush=True)

    return log


log = logger()
