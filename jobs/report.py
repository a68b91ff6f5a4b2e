"""Re-render a run's report (reports/run.py) from its summary.json:

    python -m jobs.report --config configs/tiny.yaml [--run-name demo]

The rendering lives in reports/ (the run and AgentWrite reports) and evaluation/ (benchmark
tables and plots).
"""

from __future__ import annotations

import argparse

from cluster.cli import add_settings_args, settings_from_args
from cluster.layout import RunLayout
from cluster.storage import Storage
from jobs import bad_input, run_job
from reports import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.report", description="Re-render a run's report.")
    add_settings_args(parser)
    settings = settings_from_args(parser.parse_args(argv))
    layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
    if not layout.store.exists("summary.json"):
        bad_input(f"no summary.json for run {settings.run.name!r} under {settings.storage.root} "
                  f"(run.name / --run-name; the loop writes it): {layout.store.uri('summary.json')}")
    try:
        summary = layout.store.read_json("summary.json")
    except ValueError as err:
        bad_input(f"{layout.store.uri('summary.json')} does not parse as JSON: {err}")
    if not isinstance(summary, dict) or not isinstance(summary.get("rounds"), list):
        bad_input(f"{layout.store.uri('summary.json')} is not the loop's summary (no list of \"rounds\")")
    print(run.write_report(layout.store, summary))
    return 0


if __name__ == "__main__":
    run_job(main)
