"""The run report: one Markdown file with its pictures, written next to summary.json.

    <run>/report.md
    <run>/report/round-<k>-lengths.png   words of drafts vs extended texts
    <run>/report/round-<k>-loss.png      training loss of each role
    <run>/report/probe.png               the Generator's mean words on the probe set per round

    python -m jobs.report --config configs/tiny.yaml [--run-name demo]   # re-render a run
"""

from __future__ import annotations

import argparse
import io
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cluster.cli import add_settings_args, settings_from_args  # noqa: E402
from cluster.layout import RunLayout  # noqa: E402
from cluster.storage import Storage  # noqa: E402
from jobs.summary import acceptance  # noqa: E402


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def round_lengths(layout: RunLayout, k: int) -> tuple[list[int], list[int]]:
    """Words of the drafts that passed the rules, and of the extensions that were kept."""
    drafts, extended = [], []
    for name in layout.store.list(f"round-{k}/drafts", ".jsonl"):
        drafts += [r["words"] for r in layout.store.read_jsonl(f"round-{k}/drafts/{name}") if r["text"]]
    for name in layout.store.list(f"round-{k}/extensions", ".jsonl"):
        extended += [r["words"] for r in layout.store.read_jsonl(f"round-{k}/extensions/{name}")
                     if r["status"] == "kept"]
    return drafts, extended


def lengths_figure(k: int, drafts: list[int], extended: list[int]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = 30
    top = max(drafts + extended + [1])
    ax.hist(drafts, bins=bins, range=(0, top), alpha=0.6, label=f"drafts (n={len(drafts)})")
    ax.hist(extended, bins=bins, range=(0, top), alpha=0.6, label=f"extended, kept (n={len(extended)})")
    ax.set(title=f"Round {k}: response length", xlabel="words", ylabel="responses")
    ax.legend()
    return png(fig)


def loss_figure(k: int, training: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for role, result in training.items():
        history = result.get("loss_history") or []
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker=".", label=role)
    ax.set(title=f"Round {k}: training loss", xlabel="optimizer step", ylabel="loss")
    ax.legend()
    return png(fig)


def probe_figure(summary: dict) -> bytes:
    rounds = summary["rounds"]
    base = summary.get("probe_base") or (rounds[0]["probe_before"] if rounds else {})
    xs = [0] + [r["round"] for r in rounds]
    words = [base.get("mean_words", 0)] + [r["probe_after"]["mean_words"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(xs, words, marker="o")
    ax.set(title="Generator on the probe set", xlabel="round (0 = base model)", ylabel="mean words", xticks=xs)
    return png(fig)


def yields_table(tally: dict) -> list[str]:
    rows = [("instructions", tally.get("instructions", 0), "", "")]
    drafted = tally.get("drafts.requested", 0)
    failed = {k.split(".", 2)[2]: v for k, v in tally.items() if k.startswith("drafts.failed.")}
    rows.append(("drafts", drafted, tally.get("drafts.passed", 0), ", ".join(f"{k} {v}" for k, v in failed.items())))
    rows.append(("draft sampling", tally.get("drafts.passed", 0), tally.get("drafts.passed", 0) - tally.get("drafts.sampled_out", 0),
                 f"short tail {tally.get('drafts.sampled_out', 0)}"))
    steps = {k.split(".", 2)[2]: v for k, v in tally.items() if k.startswith("extensions.step.")}
    rows.append(("extensions", tally.get("extensions.requested", 0), tally.get("extensions.passed", 0),
                 "micro-steps: " + ", ".join(f"{k} {v}" for k, v in sorted(steps.items()))))
    rows.append(("extension sampling", tally.get("extensions.passed", 0),
                 tally.get("extensions.passed", 0) - tally.get("extensions.sampled_out", 0),
                 f"short tail {tally.get('extensions.sampled_out', 0)}"))
    rows.append(("SFT examples", "", tally.get("sft.generator", 0), "per role"))
    lines = ["| stage | in | passed | rejected / notes |", "|---|---:|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return lines


def render(summary: dict, images: dict[str, str]) -> str:
    out = [f"# Run `{summary['run']}`", "",
           f"Storage: `{summary.get('storage')}`; total time {summary.get('seconds', '?')} s.", ""]
    inputs = summary.get("inputs", {})
    out += [f"Inputs: {inputs.get('seeds')} seed instructions, {inputs.get('probes')} probe instructions, "
            f"{inputs.get('set_aside', 0)} input lines set aside"
            + (f" (see `{inputs['set_aside_file']}`)." if inputs.get("set_aside_file") else "."), ""]
    if "probe" in images:
        out += ["## The Generator on the probe set", "", f"![probe]({images['probe']})", ""]
    out += ["| round | mean words before | after | growth | unique-sentence ratio | extension acceptance |",
            "|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rounds"]:
        before, after = r["probe_before"]["mean_words"], r["probe_after"]["mean_words"]
        out.append(f"| {r['round']} | {before} | {after} | {after / before if before else 0:.2f}x | "
                   f"{r['probe_after']['unique_sentence_ratio']} | {acceptance(r['synthesis']['tally'])} |")
    for r in summary["rounds"]:
        k = r["round"]
        out += ["", f"## Round {k}", "", "### Stage yields", "", *yields_table(r["synthesis"]["tally"]), ""]
        if f"lengths-{k}" in images:
            out += ["### Lengths", "", f"![lengths round {k}]({images[f'lengths-{k}']})", ""]
        if r.get("training"):
            out += ["### Training", "", "| role | steps | final loss | label tokens/s | useful-token ratio |",
                    "|---|---:|---:|---:|---:|"]
            for role, t in r["training"].items():
                m = t["metrics"]
                out.append(f"| {role} | {m.get('steps')} | {round(m.get('train_loss') or 0, 4)} | "
                           f"{m.get('label_tokens_per_s')} | {m.get('useful_token_ratio')} |")
            if f"loss-{k}" in images:
                out += ["", f"![loss round {k}]({images[f'loss-{k}']})"]
        out += ["", f"Serving the new weights took {r.get('handoff_seconds')} s."]
        if r.get("evaluation"):
            out += ["", "### Evaluation", "", "```json", str(r["evaluation"]), "```"]
    return "\n".join(out) + "\n"


def write_report(layout: RunLayout, summary: dict) -> str:
    images: dict[str, str] = {}
    if summary["rounds"]:
        layout.store.write_bytes("report/probe.png", probe_figure(summary))
        images["probe"] = "report/probe.png"
    for r in summary["rounds"]:
        k = r["round"]
        drafts, extended = round_lengths(layout, k)
        layout.store.write_bytes(f"report/round-{k}-lengths.png", lengths_figure(k, drafts, extended))
        images[f"lengths-{k}"] = f"report/round-{k}-lengths.png"
        if r.get("training"):
            layout.store.write_bytes(f"report/round-{k}-loss.png", loss_figure(k, r["training"]))
            images[f"loss-{k}"] = f"report/round-{k}-loss.png"
    layout.store.write_text("report.md", render(summary, images))
    return layout.store.uri("report.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.report", description="Re-render a run's report.")
    add_settings_args(parser)
    settings = settings_from_args(parser.parse_args(argv))
    layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
    print(write_report(layout, layout.store.read_json("summary.json")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
