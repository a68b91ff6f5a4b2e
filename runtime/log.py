"""The job's own lines: a timestamp, an optional tag, the message, flushed at once (they are
what a person watching the run, or `ray job logs`, reads). Library and engine logs go to files
in the run folder instead (cluster/logs.py).

Progress is printed as lines rather than a redrawn bar: the same text reads well in a terminal,
in `ray job logs` and in a CI log, none of which agree on carriage returns.
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


class Progress:
    """Counts finished items (records, shards, samples) and prints one line with done/total,
    failures, the rate, tokens/s when told tokens, and an ETA: at most every `every_s` seconds
    and always for the last item."""

    def __init__(self, what: str, total: int, log: Log = log, every_s: float = 10, skipped: int = 0):
        self.what, self.total, self.log, self.every_s = what, total, log, every_s
        self.done, self.failed, self.tokens, self.skipped = skipped, 0, 0, skipped
        self.started = self.printed = time.time()

    def tick(self, ok: bool = True, tokens: int = 0, detail: str = "") -> None:
        self.done += 1
        self.failed += not ok
        self.tokens += tokens
        now = time.time()
        if self.done >= self.total or now - self.printed >= self.every_s:
            self.printed = now
            self.log(self.line(now, detail))

    def line(self, now: float, detail: str = "") -> str:
        elapsed = max(now - self.started, 1e-9)
        ran = self.done - self.skipped
        rate = ran / elapsed
        eta = (self.total - self.done) / rate if rate else 0
        parts = [f"{self.what}: {self.done}/{self.total}" + (f" ({self.failed} failed)" if self.failed else "")]
        if detail:
            parts.append(detail)
        parts.append(f"{self.tokens / elapsed:.0f} tok/s" if self.tokens else f"{rate:.2f}/s")
        parts.append(f"ETA {eta:.0f}s")
        return " | ".join(parts)
