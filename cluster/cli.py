"""Command-line arguments shared by every job: a config file and overrides."""

from __future__ import annotations

import argparse
import sys

from cluster.settings import Settings, SettingsError, load_settings


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML settings file, e.g. configs/tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set training.lr=1e-3 (repeatable)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded Ray)")
    parser.add_argument("--run-name", help="same as --set run.name=...")
    parser.add_argument("--storage", help="storage root, a folder or s3:// URI (same as --set storage.root=...)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validated settings, or exit 2 with a message that names the file and the key."""
    overrides = list(args.overrides)
    if args.address:
        overrides.append(f"ray.address={args.address}")
    if args.run_name:
        overrides.append(f"run.name={args.run_name}")
    if args.storage:
        overrides.append(f"storage.root={args.storage}")
    try:
        return load_settings(args.config, overrides)
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
