"""The run report: one Markdown file with its pictures, written next to summary.json.

    <run>/report.md
    <run>/report/round-<k>-lengths.png   words of drafts vs extended texts
    <run>/report/round-<k>-loss.png      training loss of each role
    <run>/report/probe.png               the Generator's mean words on the probe set per round
    <run>/report/benchmark-<name>.png    produced vs required words per round (with evaluation)

The benchmark tables and plots are also what jobs/evaluate.py writes for one model
(scores.md, lengths.png), and jobs/agentwrite.py writes <run>/agentwrite/report.md.

    python -m jobs.report --config configs/tiny.yaml [--run-name demo]   # re-render a run
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cluster.cli import add_settings_args, settings_from_args  # noqa: E402
from cluster.layout import RunLayout  # noqa: E402
from cluster.storage import Storage  # noqa: E402
from jobs import bad_input  # noqa: E402
from jobs.summary import acceptance, probe_models  # noqa: E402
from longform.scores import LBW_BUCKETS, LONGEN_TYPES, score_row  # noqa: E402


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


# -- benchmarks --------------------------------------------------------------------------------
BENCHMARK_TITLES = {"longbench-write": "LongBench-Write", "longwrite-ruler": "LongWrite-Ruler", "longen": "LonGen"}
BENCHMARK_NOTES = {
    "longbench-write": "S_l: length score (0-100), overall and per bucket of required length; S_q: the "
                       "judge's quality score (0-100); S = (S_l + S_q) / 2.",
    "longwrite-ruler": "S_l: length score (0-100); words @ N: mean words produced when N were required.",
    "longen": "Length score (0-1), overall, per constraint type and per required range; quality: the "
              "judge's mean over 7 dimensions (1-10).",
}
NULL_NOTE = "A dash is null: no judge configured, or nothing to score."


def fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]


def verdicts_note(scores: dict) -> str:
    quality = scores.get("quality")
    if not quality:
        return "no judge"
    return f"{quality['judged']} judged, {quality['unparseable']} unparseable, {quality['judge_errors']} errors"


def benchmark_table(benchmark: str, results: list[tuple[str, dict]]) -> list[str]:
    """One row per model (or round) with the benchmark's headline scores."""
    answered = {label: f"{s['answered']}/{s['prompts']}" for label, s in results}
    if benchmark == "longbench-write":
        buckets = [label for label, _, _ in LBW_BUCKETS]
        header = ["model", "answered", "S_l", *buckets, "S_q", "S", "verdicts"]
        rows = [[label, answered[label], s["S_l"], *[s["S_l_buckets"][b]["score"] for b in buckets],
                 s["S_q"], s["S"], verdicts_note(s)] for label, s in results]
    elif benchmark == "longwrite-ruler":
        lengths = sorted({int(n) for _, s in results for n in s["per_length"]})
        header = ["model", "answered", "S_l", *[f"words @ {n}" for n in lengths]]
        rows = [[label, answered[label], s["S_l"],
                 *[s["per_length"].get(str(n), {}).get("mean_words") for n in lengths]] for label, s in results]
    else:
        ranges = sorted({r for _, s in results for r in s["by_range"]})
        header = ["model", "answered", "length score", *LONGEN_TYPES, *ranges, "quality", "verdicts"]
        rows = [[label, answered[label], s["length_score"],
                 *[s["by_type"].get(t, {}).get("score") for t in LONGEN_TYPES],
                 *[s["by_range"].get(r, {}).get("score") for r in ranges],
                 s["quality_score"], verdicts_note(s)] for label, s in results]
    return md_table(header, rows)


def benchmark_markdown(benchmark: str, results: list[tuple[str, dict]], image: str, source: str) -> str:
    """scores.md of jobs/evaluate.py."""
    lines = [f"# {BENCHMARK_TITLES[benchmark]}", "", f"Data: `{source}`.", "",
             *benchmark_table(benchmark, results), "", BENCHMARK_NOTES[benchmark] + " " + NULL_NOTE, "",
             f"![produced vs required words]({image})", ""]
    for label, scores in results:
        if scores["failed_responses"]:
            lines.append(f"{label}: {len(scores['failed_responses'])} responses failed to generate "
                         f"(left out of the scores; see responses.jsonl).")
        not_scored = (scores.get("quality") or {}).get("not_scored", [])
        if not_scored:
            lines += ["", f"{label}: verdicts not scored ({len(not_scored)}):", ""]
            lines += [f"- `{v['id']}`: {v['status']}: {v['reason']}" for v in not_scored]
    return "\n".join(lines) + "\n"


def plot_points(scored: list[dict]) -> list[tuple[float, int]]:
    return [(s["required"], s["produced"]) for s in scored]


def required_vs_produced_figure(benchmark: str, series: dict[str, list[tuple[float, int]]]) -> bytes:
    """Produced vs required words, log-log, one colour per model; y = 0 is drawn at 1."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    values = [v for points in series.values() for x, y in points for v in (x, max(y, 1))] or [1, 10]
    low, high = min(values) / 1.5, max(values) * 1.5
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="produced = required")
    for label, points in series.items():
        ax.scatter([x for x, _ in points], [max(y, 1) for _, y in points], s=28, alpha=0.5, label=label)
    required = "middle of the required window" if benchmark == "longen" else "required words"
    ax.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high), xlabel=required,
           ylabel="produced words", title=f"{BENCHMARK_TITLES[benchmark]}: produced vs required")
    ax.legend(fontsize=8)
    return png(fig)


def evaluation_results(summary: dict) -> dict[str, list[tuple[str, dict, str]]]:
    """benchmark -> [(label, scores, outputs folder)], base model first, then the rounds and the
    final model."""
    entries = [("base", summary["evaluation_base"])] if summary.get("evaluation_base") else []
    entries += [(f"round {r['round']}", r["evaluation"]) for r in summary["rounds"] if r.get("evaluation")]
    if (summary.get("final") or {}).get("evaluation"):
        entries.append(("final", summary["final"]["evaluation"]))
    results = defaultdict(list)
    for label, evaluation in entries:
        for benchmark, result in evaluation.items():
            results[benchmark].append((label, result["scores"], result["out"]))
    return results


def benchmark_section(summary: dict, images: dict[str, str]) -> list[str]:
    results = evaluation_results(summary)
    if not results:
        return []
    out = ["## Benchmarks", ""]
    for benchmark, entries in results.items():
        out += [f"### {BENCHMARK_TITLES[benchmark]}", "",
                *benchmark_table(benchmark, [(label, scores) for label, scores, _ in entries]), "",
                BENCHMARK_NOTES[benchmark] + " " + NULL_NOTE, ""]
        if f"benchmark-{benchmark}" in images:
            out += [f"![{benchmark}]({images[f'benchmark-{benchmark}']})", ""]
        out += ["Details: " + ", ".join(f"[{label}]({folder}/scores.md)" for label, _, folder in entries), ""]
    return out


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
    out += ["", *benchmark_section(summary, images)]
    if summary.get("final"):
        out += ["", *final_section(summary["final"], images)]
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
            out += ["", "Benchmarks: " + ", ".join(f"[{BENCHMARK_TITLES[name]}]({result['out']}/scores.md)"
                                                   for name, result in r["evaluation"].items())]
    return "\n".join(out) + "\n"


def length_probe_points(store: Storage, label: str) -> list[tuple[float, int]]:
    rel = f"final/length-probe/{label}.jsonl"
    rows = [r for r in store.read_jsonl(rel) if r.get("response") is not None] if store.exists(rel) else []
    return plot_points([score_row("longen", r) for r in rows])


def final_section(final: dict, images: dict[str, str]) -> list[str]:
    c, t, probe = final["collect"], final["training"], final["length_probe"]
    tally = c["tally"]
    out = ["## The final model", "",
           f"Data: {c['collected']} of {c['responses']} answers in the window {c['window'][0]}-{c['window'][1]} "
           f"words, each query given a length constraint it meets (`{c['files']['data']}`; "
           f"set aside: `{c['files']['rejected']}`).", "",
           *md_table(["constraint", "examples"], [[k, tally.get(f"type.{k}", 0)] for k in ("about", "range", "above", "below")]),
           "", f"Queries rewritten by the Generator: {tally.get('rewritten', 0)}; constraint appended as a sentence: "
           f"{tally.get('appended', 0)}.", "",
           f"Fine-tuning the base model: {t['examples']} examples (+{t.get('mixed', 0)} mixed in), "
           f"{t['metrics'].get('steps')} steps, final loss {fmt(t['metrics'].get('train_loss'))}. "
           f"Weights: `{final['model']}`.", "",
           f"Following a requested length ({probe['words'][0]}-{probe['words'][1]} words asked, "
           "LonGen's length score: 1 inside the window):", "",
           *md_table(["model", "length score", "inside the window", "mean words", "unique-sentence ratio",
                      "rank corr. asked ~ written"],
                     [[label, fmt(p.get("length_score")), fmt(p.get("in_window")), fmt(p.get("mean_words")),
                       fmt(p.get("unique_sentence_ratio")), fmt(p.get("asked_vs_written"))]
                      for label, p in probe_models(final)])]
    if "final-lengths" in images:
        out += ["", f"![asked vs written]({images['final-lengths']})"]
    if final.get("preference"):
        out += ["", *preference_section(final["preference"])]
    return out + [""]


def preference_section(preference: dict) -> list[str]:
    p, d = preference["pairs"], preference["training"]
    reward = (d["metrics"].get("reward_history") or [{}])[-1]
    return ["### The preference stage (DPO)", "",
            f"Pairs: {p['pairs']} from {p['queries']} constrained queries; {p['unpaired']} queries had no answer "
            f"to reject (`{p['files']['pairs']}`, `{p['files']['unpaired']}`).", "",
            *md_table(["rejected because", "pairs"], [[k.split(".", 1)[1], v] for k, v in sorted(p["tally"].items())
                                                       if k.startswith("rejected.")]),
            "", f"DPO from the final model: {d['metrics'].get('steps')} steps, mean loss "
            f"{fmt(d['metrics'].get('train_loss'))}; last step's reward margin {fmt(reward.get('rewards/margins'))}, "
            f"accuracy {fmt(reward.get('rewards/accuracies'))}. Weights: `{preference['model']}`.", ""]


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
    for benchmark, entries in evaluation_results(summary).items():
        series = {label: benchmark_points(layout.store, folder) for label, _, folder in entries}
        layout.store.write_bytes(f"report/benchmark-{benchmark}.png", required_vs_produced_figure(benchmark, series))
        images[f"benchmark-{benchmark}"] = f"report/benchmark-{benchmark}.png"
    if summary.get("final"):
        labels = ("base", "final", "dpo") if summary["final"].get("preference") else ("base", "final")
        series = {label: length_probe_points(layout.store, label) for label in labels}
        layout.store.write_bytes("report/final-lengths.png", required_vs_produced_figure("longen", series))
        images["final-lengths"] = "report/final-lengths.png"
    layout.store.write_text("report.md", render(summary, images))
    return layout.store.uri("report.md")


def benchmark_points(store: Storage, folder: str) -> list[tuple[float, int]]:
    rel = f"{folder}/scored.jsonl"
    return plot_points(list(store.read_jsonl(rel))) if store.exists(rel) else []


# -- the AgentWrite job's report -------------------------------------------------------------------
def agentwrite_words(store: Storage) -> list[int]:
    return [r["words"] for name in store.list("samples", ".jsonl") for r in store.read_jsonl(f"samples/{name}")
            if r["status"] == "done"]


def words_figure(words: list[int]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(words, bins=30, range=(0, max(words + [1])))
    ax.set(title=f"AgentWrite: words per written sample (n={len(words)})", xlabel="words", ylabel="samples")
    return png(fig)


def write_agentwrite_report(store: Storage, summary: dict) -> str:
    """<run>/agentwrite/report.md and report/words.png; `store` is the job's folder."""
    store.write_bytes("report/words.png", words_figure(agentwrite_words(store)))
    samples, words, inputs = summary["samples"], summary["words"], summary["inputs"]
    out = [f"# AgentWrite run `{summary['run']}`", "",
           f"Prompts `{summary['prompts']}`; writer `{summary['writer']['model']}` "
           f"({summary['writer']['version']}); {summary['seconds']} s in this invocation.", "",
           *md_table(["prompts", "set aside", "samples done", "failed", "words", "words per sample", "sections",
                      "model calls", "steps from cache"],
                     [[inputs["prompts"], inputs["set_aside"], samples["done"], samples["failed"], words["total"],
                       words["mean_per_sample"], words["sections"], summary["steps"]["called"],
                       summary["steps"]["cached"]]]), ""]
    if inputs.get("set_aside_file"):
        out += [f"Prompt lines set aside: `{inputs['set_aside_file']}`.", ""]
    out += ["## Failures", ""]
    if samples["failed_by_reason"]:
        out += md_table(["reason", "samples"], [[k, v] for k, v in samples["failed_by_reason"].items()])
        out += ["", "First failures (all are in `samples/*.jsonl`):", ""]
        out += [f"- `{f['id']}`: {f['reason'][:300]}" for f in samples["first_failures"]]
    else:
        out.append("None.")
    out += ["", "## Lengths", "", "![words per sample](report/words.png)", "",
            f"SFT examples: `sft/` ({len(summary['sft_files'])} shards of chat `messages`, "
            "the format training/ reads).", ""]
    store.write_text("report.md", "\n".join(out))
    return store.uri("report.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.report", description="Re-render a run's report.")
    add_settings_args(parser)
    settings = settings_from_args(parser.parse_args(argv))
    layout = RunLayout.create(Storage.open(settings.storage.root, settings.storage), settings.run.name)
    if not layout.store.exists("summary.json"):
        bad_input(f"no summary.json for run {settings.run.name!r} under {settings.storage.root} "
                  f"(run.name / --run-name; the loop writes it): {layout.store.uri('summary.json')}")
    print(write_report(layout, layout.store.read_json("summary.json")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
