"""The AgentWrite job's report: <run>/agentwrite/report.md and report/words.png."""

from __future__ import annotations

from evaluation.tables import md_table
from reports.figures import words_figure


def agentwrite_words(store) -> list[int]:
    return [r["words"] for name in store.list("samples", ".jsonl") for r in store.read_jsonl(f"samples/{name}")
            if r["status"] == "done"]


def write_agentwrite_report(store, summary: dict) -> str:
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
