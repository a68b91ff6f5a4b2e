"""The job's own lines: a timestamp, an optional tag, the message, flushed at once (they are
what a person watching the run, or `ray job logs`, reads). Library and engine logs go to files
in the run folder instead (cluster/logs.py).

Progress is printed as lines rather than a redrawn bar: the same text reads well in a terminal,
in `ray job logs` and in a CI log, none of which agree on carriage returns. Every counted piece
of work prints them through `Progress` (the shard fan-out, a benchmark's answers and verdicts,
a fine-tune's steps), so they all read alike and none prints more than one line every
`every_s` seconds, plus the last:

    [12:31:02] [round 1] shard shard-00007 done (8/63 shards): 71 SFT examples so far | 41210 tok/s | ETA 2480s
    [12:40:15] [evaluate] 120/300 responses, 2 failed | 1.35/s | ETA 133s
    [14:05:40] [train generator r1] 40/120 steps: loss 0.8123 lr 9.20e-05 | 0.21/s | ETA 381s
"""

from __future__ import annotations

import time
from collections.abc import Callable

Log = Callable[[str], None]

PROGRESS_EVERY_S = 20.0  # the most often a piece of work prints a progress line (the last one always)


def stamp(message: str, tag: str | None = None) -> str:
    """`[HH:MM:SS] [tag] message`: the shape of every line the job prints."""
    prefix = f"[{tag}] " if tag else ""
    return f"[{time.strftime('%H:%M:%S')}] {prefix}{message}"


def logger(tag: str | None = None) -> Log:
    """A `log(message)` that prints `[HH:MM:SS] [tag] message`."""

    def log(message: str) -> None:
        print(stamp(message, tag), flush=True)

    return log


log = logger()


class Progress:
    """Counts finished units of a known total and, at most once every `every_s` seconds and
    always when the last one is done, logs one line:

        [<event> (]<done>/<total> <unit>[, <n> failed][)][: <records>] | <rate> | ETA <s>s

    `done` units were finished before (a resumed stage): they count towards done/total, not
    towards the rate or the ETA. The rate is completion tokens per second when `tokens` is set,
    else units per second."""

    def __init__(self, unit: str, total: int, log: Log = log, every_s: float = PROGRESS_EVERY_S, done: int = 0,
                 tokens: bool = False):
        self.unit, self.total, self.log, self.every_s, self.count_tokens = unit, total, log, every_s, tokens
        self.done = self.skipped = done
        self.failed = self.tokens = 0
        self.started = self.printed = time.time()

    def tick(self, ok: bool = True, tokens: int = 0, event: str = "", records: str = "", n: int = 1) -> str | None:
        """`n` more units done (`ok` False: they failed); returns the line if one was logged."""
        self.done += n
        self.failed += 0 if ok else n
        self.tokens += tokens
        now = time.time()
        if self.done < self.total and now - self.printed < self.every_s:
            return None
        self.printed = now
        line = self.line(now, event, records)
        self.log(line)
        return line

    def line(self, now: float, event: str = "", records: str = "") -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = (self.done - self.skipped) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0
        counts = f"{self.done}/{self.total} {self.unit}" + (f", {self.failed} failed" if self.failed else "")
        head = f"{event} ({counts})" if event else counts
        speed = f"{self.tokens / elapsed:.0f} tok/s" if self.count_tokens else f"{rate:.2f}/s"
        return f"{head}{': ' + records if records else ''} | {speed} | ETA {eta:.0f}s"
