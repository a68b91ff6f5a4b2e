"""Entry points that `ray job submit` runs (python -m jobs.<name>).

Every job exits 0 when done, 2 on bad input or settings (a setting or argument that does not
parse, an input file missing, empty or mostly unusable, a run that is not there, a cluster the
settings can never fit: all found before the work they would spoil), and 1 on a failure while
running (a deployment that fails, storage unreachable past its retries, an unexpected error).
"""

from __future__ import annotations

import sys
from typing import NoReturn

BAD_INPUT = 2


class InputError(SystemExit):
    """SystemExit with code 2 that still reads as its message (its text is on stderr already)."""

    def __init__(self, message: str):
        super().__init__(BAD_INPUT)
        self.message = message

    def __str__(self) -> str:
        return self.message


def bad_input(message: str) -> NoReturn:
    """Stop the job on bad input: `error: <message>` on stderr, exit 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise InputError(f"error: {message}")
