"""Entry points that `ray job submit` runs (python -m jobs.<name>).

Every job exits 0 when done, 2 on bad input or settings (a setting or argument that does not
parse, an input file missing, empty or mostly unusable, a run that is not there, a cluster the
settings can never fit: all found before the work they would spoil), and 1 on a failure while
running (a deployment that fails, storage unreachable past its retries, an unexpected error).
"""

from __future__ import annotations

from cluster.errors import BAD_INPUT, InputError, bad_input, run_job  # noqa: F401 - what the jobs import
