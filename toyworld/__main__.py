"""Command line of the toy world: `python -m toyworld build models/tiny` builds the tiny model
(the one `make tiny-model` and the tests' `tiny_model` fixture build)."""

from __future__ import annotations

import argparse
import json
import sys


def build_model(args: argparse.Namespace) -> None:
    from toyworld.build import BuildSpec, build

    def log(progress: dict) -> None:
        print(f"step {progress['step']}/{progress['steps']}  loss {progress['loss']:.4f}  "
              f"{progress['tokens_per_s']} tok/s  ETA {progress['eta_s']}s", flush=True)

    spec = BuildSpec(seed=args.seed) if args.steps is None else BuildSpec(seed=args.seed, steps=args.steps)
    summary = build(args.out, spec, log=log, probes=not args.no_probes)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    probes = summary.get("probes", {})
    words = ", ".join(f"{lang} {p['mean_words']}" for lang, p in probes.items())
    print(f"built {args.out}: {summary['params']:,} parameters in {summary['seconds']} s; "
          f"probe mean words: {words or 'not measured'}")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m toyworld")
    commands = root.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the tiny model on CPU")
    build.add_argument("out", help="folder to write the model and tokenizer to")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--steps", type=int, help="optimizer steps (default: BuildSpec.steps)")
    build.add_argument("--no-probes", action="store_true", help="skip the probe answers at the end")
    build.set_defaults(run=build_model)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
