"""How a job stops on bad input: `error: <message>` on stderr and exit code 2 (jobs/__init__.py
lists the exit codes). Raised wherever the bad input is found, before the work it would spoil."""

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


def run_job(main) -> NoReturn:
    """`sys.exit(main())` for a job's `__main__`, with the storage failures a user acts on
    printed as one `error:` line instead of a traceback: no S3 credentials (exit 2, bad
    settings) and storage unreachable past `storage.retry_timeout_s` (exit 1)."""
    from cluster.storage import NoStorageCredentials, StorageUnavailable

    try:
        code = main()
    except NoStorageCredentials as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        code = BAD_INPUT
    except StorageUnavailable as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        code = 1
    sys.exit(code)
