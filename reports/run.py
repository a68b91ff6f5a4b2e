"""The run report: one Markdown file with its pictures, written next to summary.json.

    <run>/report.md
    <run>/report/round-<k>-lengths.png   words of drafts vs extended texts
    <run>/report/round-<k>-loss.png      training loss of each role
    <run>/report/probe.png               the Generator's mean words on the probe set per round
    <run>/report/benchmark-<name>.png    produced vs required words per round (with evaluation)
    <run>/report/final-lengths.png       asked vs written words of the final stage's models

`store` is the run's folder (RunLayout.store); `summary` is what the loop wrote to summary.json.
"""

from __future__ import annotations

from collections import defaultdict

from evaluation.plots import plot_points, required_vs_produced_figure
from evaluation.registry import get
from evaluation.tables import benchmark_note, benchmark_table, fmt, md_table
from longform.scores import longen_row_score
from reports.figures import lengths_figure, loss_figure, probe_figure
from reports.summary import acceptance, ceiling_text, probe_models


# -- what the report reads besides the summary ------------------------------------------------
def round_lengths(store, k: int) -> tuple[list[int], list[int]]:
    """Words of the drafts that passed the rules, and of the extensions that were kept."""
    drafts, extended = [], []
    for name in store.list(f"round-{k}/drafts", ".jsonl"):
        drafts += [r["words"] for r in store.read_jsonl(f"round-{k}/drafts/{name}") if r["text"]]
    for name in store.list(f"round-{k}/extensions", ".jsonl"):
        extended += [r["words"] for r in store.read_jsonl(f"round-{k}/extensions/{name}") if r["status"] == "kept"]
    return drafts, extended


def benchmark_points(store, folder: str) -> list[tuple[float, int]]:
    rel = f"{folder}/scored.jsonl"
    return plot_points(list(store.read_jsonl(rel))) if store.exists(rel) else []


def length_probe_points(store, label: str) -> list[tuple[float, int]]:
    rel = f"final/length-probe/{label}.jsonl"
    rows = [r for r in store.read_jsonl(rel) if r.get("response") is not None] if store.exists(rel) else []
    return plot_points([longen_row_score(r) for r in rows])


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


# -- the Markdown ------------------------------------------------------------------------------
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


def benchmark_section(summary: dict, images: dict[str, str]) -> list[str]:
    results = evaluation_results(summary)
    if not results:
        return []
    out = ["## Benchmarks", ""]
    for benchmark, entries in results.items():
        out += [f"### {get(benchmark).title}", "",
                *benchmark_table(benchmark, [(label, scores) for label, scores, _ in entries]), "",
                benchmark_note(benchmark), ""]
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
            out += ["", "Benchmarks: " + ", ".join(f"[{get(name).title}]({result['out']}/scores.md)"
                                                   for name, result in r["evaluation"].items())]
    return "\n".join(out) + "\n"


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
           f"Fine-tuning the base model: {t['examples']} examples ("
           + (f"+{t['closed_cuts']} closed cuts, " if t.get("closed_cuts") else "") + f"+{t.get('mixed', 0)} mixed in), "
           f"{t['metrics'].get('steps')} steps, final loss {fmt(t['metrics'].get('train_loss'))}. "
           f"Weights: `{final['model']}`.", "",
           f"Following a requested length ({probe['words'][0]}-{probe['words'][1]} words asked, "
           "LonGen's length score: 1 inside the window):", "",
           *md_table(["model", "length score", "inside the window", "mean words", "unique-sentence ratio",
                      "rank corr. asked ~ written"],
                     [[label, fmt(p.get("length_score")), fmt(p.get("in_window")), fmt(p.get("mean_words")),
                       fmt(p.get("unique_sentence_ratio")), fmt(p.get("asked_vs_written"))]
                      for label, p in probe_models(final)])]
    ceiling = ceiling_text(final)
    if ceiling:
        out += ["", f"{ceiling.capitalize()}."]
    if "final-lengths" in images:
        out += ["", f"![asked vs written]({images['final-lengths']})"]
    if final.get("preference"):
        out += ["", *preference_section(final["preference"])]
    return out + [""]


def preference_section(preference: dict) -> list[str]:
    p, d = preference["pairs"], preference["training"]
    reward = (d["metrics"].get("reward_history") or [{}])[-1]
    judge = p.get("judge")
    judged = [] if not judge else [
        f"The judge (`{judge['provenance']['model']}`, {judge['provenance']['prompt']}) was asked about "
        f"{judge['asked']} in-window answers: {judge['scored']} scored, {judge['unparseable']} unparseable, "
        f"{judge['errors']} failed calls; its best-rated answer is the chosen one of "
        f"{p['tally'].get('chosen.judge', 0)} queries (`{judge['file']}`).", ""]
    return ["### The preference stage (DPO)", "",
            f"Pairs: {p['pairs']} from {p['queries']} constrained queries"
            + (f" ({p['extra_windows']} of them extra windows, each around another answer of its instruction: "
               "`dpo.extra_windows`)" if p.get("extra_windows") else "")
            + f"; {p['unpaired']} queries had no answer "
            f"to reject (`{p['files']['pairs']}`, `{p['files']['unpaired']}`).", "", *judged,
            *md_table(["rejected because", "pairs"], [[k.split(".", 1)[1], v] for k, v in sorted(p["tally"].items())
                                                       if k.startswith("rejected.")]),
            "", f"DPO from the final model: {d['metrics'].get('steps')} steps, mean loss "
            f"{fmt(d['metrics'].get('train_loss'))}; last step's reward margin {fmt(reward.get('rewards/margins'))}, "
            f"accuracy {fmt(reward.get('rewards/accuracies'))}. Weights: `{preference['model']}`.", ""]


# -- writing it --------------------------------------------------------------------------------
def write_report(store, summary: dict) -> str:
    """report.md and its pictures under `store` (the run's folder); report.md's URI."""
    images: dict[str, str] = {}

    def picture(key: str, rel: str, data: bytes) -> None:
        store.write_bytes(rel, data)
        images[key] = rel

    if summary["rounds"]:
        picture("probe", "report/probe.png", probe_figure(summary))
    for r in summary["rounds"]:
        k = r["round"]
        picture(f"lengths-{k}", f"report/round-{k}-lengths.png", lengths_figure(k, *round_lengths(store, k)))
        if r.get("training"):
            picture(f"loss-{k}", f"report/round-{k}-loss.png", loss_figure(k, r["training"]))
    for benchmark, entries in evaluation_results(summary).items():
        series = {label: benchmark_points(store, folder) for label, _, folder in entries}
        picture(f"benchmark-{benchmark}", f"report/benchmark-{benchmark}.png",
                required_vs_produced_figure(benchmark, series))
    if summary.get("final"):
        labels = ("base", "final", "dpo") if summary["final"].get("preference") else ("base", "final")
        series = {label: length_probe_points(store, label) for label in labels}
        picture("final-lengths", "report/final-lengths.png", required_vs_produced_figure("longen", series))
    store.write_text("report.md", render(summary, images))
    return store.uri("report.md")
