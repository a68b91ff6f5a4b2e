"""The end-of-run summary, as a table a person can read in a terminal (the run report,
reports/run.py, shows the same views)."""

from __future__ import annotations

from typing import TextIO


def table(headers: list[str], rows: list[list], out: TextIO) -> None:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        out.write("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def acceptance(tally: dict) -> float:
    requested = tally.get("extensions.requested", 0)
    return round(tally.get("extensions.passed", 0) / requested, 3) if requested else 0.0


def print_summary(summary: dict, out: TextIO) -> None:
    out.write(f"\n== Self-Lengthen run {summary['run']!r} ({summary.get('seconds', '?')} s) ==\n")
    inputs = summary.get("inputs", {})
    out.write(f"inputs: {inputs.get('seeds')} seeds, {inputs.get('probes')} probes, "
              f"{inputs.get('set_aside', 0)} input lines set aside\n\n")
    rows = []
    for r in summary["rounds"]:
        t = r["synthesis"]["tally"]
        before, after = r["probe_before"] or {}, r["probe_after"] or {}
        growth = after.get("mean_words", 0) / before["mean_words"] if before.get("mean_words") else 0
        si = r.get("self_instruct") or {}
        rows.append([
            r["round"], f"+{si.get('self_instruct.accepted', 0)}/{si.get('self_instruct.candidates', 0)}",
            t.get("instructions", 0), f"{t.get('drafts.passed', 0)}/{t.get('drafts.requested', 0)}",
            f"{t.get('extensions.passed', 0)}/{t.get('extensions.requested', 0)}", acceptance(t),
            t.get("sft.generator", 0), before.get("mean_words"), after.get("mean_words"), f"{growth:.2f}x",
            after.get("unique_sentence_ratio"),
        ])
    table(["round", "self-instr", "instr", "drafts ok", "extended ok", "accept", "sft", "probe words before",
           "after", "growth", "unique sent."], rows, out)
    out.write("\n")
    if summary.get("final"):
        print_final(summary["final"], out)


def probe_models(final: dict) -> list[tuple[str, dict]]:
    """(label, length-probe summary) of every model the final stage scored."""
    probe = final["length_probe"]
    models = [("base", probe["base"]), ("final", probe["final"])]
    if final.get("preference"):
        models.append(("final + DPO", final["preference"]["length_probe"]))
    return models


def ceiling_text(final: dict) -> str | None:
    """What a writer that ignores the number asked could score on the probe set, where the final
    stage measured it (longform.length_probe.fixed_length_ceiling)."""
    ceiling = next((p["fixed_length_ceiling"] for _, p in probe_models(final) if p.get("fixed_length_ceiling") is not None),
                   None)
    return None if ceiling is None else (f"a writer that ignores the number, one length a language, scores at most "
                                         f"{ceiling} on these probes")


def print_final(final: dict, out: TextIO) -> None:
    c, t = final["collect"], final["training"]
    tally = c["tally"]
    out.write(f"final data: {c['collected']} of {c['responses']} answers in {c['window'][0]}-{c['window'][1]} words; "
              + ", ".join(f"{k} {tally.get(f'type.{k}', 0)}" for k in ("about", "range", "above", "below"))
              + f"; queries rewritten {tally.get('rewritten', 0)}, constraint appended {tally.get('appended', 0)}\n")
    history = t.get("loss_history") or []
    loss = f"{history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}" if history else t["metrics"].get("train_loss")
    cuts = f"+{t['closed_cuts']} closed cuts, " if t.get("closed_cuts") else ""
    out.write(f"final SFT of the base model: {t['examples']} examples ({cuts}+{t.get('mixed', 0)} mixed), "
              f"{t['metrics'].get('steps')} steps, loss {loss}\n")
    preference = final.get("preference")
    if preference:
        p, d = preference["pairs"], preference["training"]
        rejected = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(p["tally"].items()) if k.startswith("rejected."))
        history = d.get("loss_history") or []
        loss = f"{history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}" if history else d["metrics"].get("train_loss")
        judge = p.get("judge")
        judged = (f"; the judge rated {judge['scored']} of {judge['asked']} in-window answers and chose "
                  f"{p['tally'].get('chosen.judge', 0)}" if judge else "")
        extra = f", {p['extra_windows']} of them extra windows" if p.get("extra_windows") else ""
        out.write(f"preference pairs: {p['pairs']} from {p['queries']} constrained queries{extra} (rejected: {rejected}; "
                  f"{p['unpaired']} without a pair{judged}); DPO {d['metrics'].get('steps')} steps, loss {loss}\n")
    probe = final["length_probe"]
    rows = [[label, p.get("length_score"), p.get("in_window"), p.get("mean_words"), p.get("unique_sentence_ratio"),
             p.get("asked_vs_written")] for label, p in probe_models(final)]
    out.write(f"\nfollowing a requested length ({probe['words'][0]}-{probe['words'][1]} words asked):\n")
    table(["model", "length score", "inside window", "mean words", "unique sent.", "asked~written (rank corr.)"],
          rows, out)
    ceiling = ceiling_text(final)
    if ceiling:
        out.write(f"({ceiling})\n")
    out.write(f"\nfinal model: {final['model']}\n")
    if preference:
        out.write(f"final + DPO: {preference['model']}\n")
