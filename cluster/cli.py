"""Command-line arguments shared by every job: a config file, overrides, and --verbose."""

from __future__ import annotations

import argparse
import json
import sys

from cluster.logs import set_verbosity
from cluster.settings import MASK, Settings, SettingsError, is_secret_name, load_settings, mask_text


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    parser.error = masked_errors(parser)
    parser.add_argument("--config", required=True, help="YAML settings file, e.g. configs/tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        type=override_arg, help="override a setting, e.g. --set training.lr=1e-3 (repeatable)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded Ray)")
    parser.add_argument("--run-name", help="same as --set run.name=...")
    parser.add_argument("--storage", help="storage root, a folder or s3:// URI (same as --set storage.root=...)")
    parser.add_argument("--verbose", action="store_true",
                        help="print the engines' and Ray workers' logs too (by default they only go to files)")


def override_arg(text: str) -> str:
    """A --set argument holds its `=`: `--set key value` is refused here, naming the key only,
    before argparse takes the value (which may be a secret) for a positional argument and
    quotes it in an error."""
    if "=" not in text:
        shown = MASK if is_secret_name(text) else mask_text(text)
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. training.lr=1e-3 (got {shown!r})")
    return text


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {value}")
    return value


def masked_errors(parser: argparse.ArgumentParser):
    """The parser's `error` without the values of arguments it did not recognise: argparse
    prints them ("unrecognized arguments: ..."), and a `--set key value` that lacks its `=`
    leaves the value, which may be a secret, among them. Options are still named."""
    error = parser.error

    def masked(message: str):
        head, sep, rest = message.partition("unrecognized arguments: ")
        if sep:
            shown = [a if a.startswith("-") else MASK for a in rest.split(" ")]
            message = f"{head}{sep}{' '.join(shown)} (values not shown; a setting is --set key=value)"
        error(message)

    return masked


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validated settings, or exit 2 with a message that names the file and the key."""
    set_verbosity(getattr(args, "verbose", False))
    overrides = list(args.overrides)
    for key, value in (("ray.address", args.address), ("run.name", args.run_name), ("storage.root", args.storage)):
        if value:
            overrides.append(text_override(key, value))
    warn_secrets_on_the_command_line(overrides)
    try:
        return load_settings(args.config, overrides)
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def text_override(key: str, value: str) -> str:
    """`key=value` for a flag whose value is text as typed (--run-name 0042 is the name "0042",
    not YAML's number 34): written as a quoted YAML string."""
    return f"{key}={json.dumps(value)}"


def warn_secrets_on_the_command_line(overrides: list[str]) -> None:
    """Settings mask secrets in every message they print, but a command line is seen by `ps`
    and kept as a Ray job's entrypoint: say so (naming the key, never the value)."""
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        if "=" in override and any(is_secret_name(part) for part in key.split(".")):
            print(f"warning: --set {key}=***: a secret on the command line is visible to anyone who can list "
                  "processes or read the Ray job's entrypoint; prefer the environment "
                  "(e.g. AWS_SECRET_ACCESS_KEY from a Kubernetes Secret)", file=sys.stderr)
