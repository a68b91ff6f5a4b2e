"""Serve the trained Generator as an OpenAI-compatible API (chat/completions, completions):

    python -m jobs.serve --config configs/tiny.yaml [--final | --round K|latest] [--host 127.0.0.1] [--port 8000]
                         [--api-key-env NAME]

`--final` serves the final model (the base model fine-tuned on the collected length-constrained
data, <run>/final/model/). Without either it serves the last round that exported a Generator;
--round 0 serves the base model. It binds to loopback unless told otherwise. A RayService runs the same app through
`import_path: jobs.serve:app_builder` with `args: {config: ..., round: ..., set: [...], api_key_env: NAME}`.

With `--api-key-env NAME` (`api_key_env` in a RayService) every request needs the header
`Authorization: Bearer <the value of NAME>` and gets 401 without it. The key is read from the
environment of the Serve replicas (an embedded Ray inherits this process's; on Kubernetes the
pods get it from a Secret), never from an argument, so it is in no option the dashboard shows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from cluster.cli import add_settings_args, settings_from_args
from cluster.layout import FINAL
from cluster.settings import load_settings
from jobs import run_job
from runtime.context import RunContext
from runtime.preflight import generator_to_serve

APP = "generator"


def round_arg(text: str) -> int | str | None:
    """--round: a round number, `latest` (the default) or `final`."""
    if text in ("latest", FINAL):
        return None if text == "latest" else FINAL
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a round number, 'latest' or 'final', not {text!r}") from None


def app_builder(args: dict):
    """Entry point for a RayService's serveConfigV2 (`import_path: jobs.serve:app_builder`)."""
    from actors.generator_app import build_app  # vLLM loads here

    settings = load_settings(args["config"], list(args.get("set", [])))
    round = args.get("round")
    app, _, _ = build_app(settings, None if round is None else round_arg(str(round)), args.get("api_key_env"))
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.serve", description=__doc__.split("\n\n")[0])
    add_settings_args(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--round", type=round_arg, help="round whose Generator to serve (0: the base model; "
                       "default: latest)")
    which.add_argument("--final", action="store_const", const=FINAL, dest="round",
                       help="serve the final model (the loop's final stage)")
    parser.add_argument("--host", help="bind address (default: serving.host, loopback)")
    parser.add_argument("--port", type=int, help="port (default: serving.port)")
    parser.add_argument("--api-key-env", metavar="NAME",
                        help="require `Authorization: Bearer <key>`, the key being the value of this "
                             "environment variable (default: no key)")
    args = parser.parse_args(argv)
    # checked as the settings they stand for (serving.port: 1-65535)
    args.overrides = [*args.overrides, *([f"serving.host={args.host}"] if args.host else []),
                      *([f"serving.port={args.port}"] if args.port is not None else [])]
    settings = settings_from_args(args)
    host, port = settings.serving.host, settings.serving.port
    if args.api_key_env and not os.environ.get(args.api_key_env, "").strip():
        print(f"error: --api-key-env {args.api_key_env}: that environment variable is not set", file=sys.stderr)
        return 2
    generator_to_serve(settings, args.round)  # exit 2 before Ray starts when there is nothing to serve
    RunContext.open(settings, "serve")
    from ray import serve

    from actors.generator_app import build_app
    from actors.serving import DeployError, run_app
    app, model, k = build_app(settings, args.round, args.api_key_env)
    try:
        run_app(app, APP, settings, host, port)
    except DeployError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        serve.shutdown()
        return 1
    what = "the final model" if k == FINAL else f"round {k}" if k else "the base model"
    key = f", key from ${args.api_key_env}" if args.api_key_env else ""
    print(f"serving the Generator ({what}) as model {model!r} at http://{host}:{port}/v1{key} (Ctrl-C stops)",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    run_job(main)
