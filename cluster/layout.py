"""Where everything of a run lives, relative to the storage root:

    <run>/settings.json                      resolved settings (no secrets)
    <run>/summary.json, report.md            what happened, for people
    <run>/rejected/inputs.jsonl              seed/probe lines set aside: file, line, reason
    <run>/probes/<label>.jsonl               the Generator's probe answers (base, round-<k>)
    <run>/adapters/<name>/                   LoRA adapters published for serving (lora mode)
    <run>/round-<k>/self-instruct/{new,rejected}.jsonl   instructions self-instruct added / turned down
    <run>/round-<k>/instructions/shard-NNNNN.jsonl
    <run>/round-<k>/{drafts,extensions,sft-generator,sft-extender}/shard-NNNNN.jsonl
    <run>/round-<k>/alpaca-{generator,extender}/shard-NNNNN.jsonl   the SFT sets as instruction/input/output
    <run>/round-<k>/stats/shard-NNNNN.json   written last: the shard is complete
    <run>/round-<k>/train-generator-extender/  Ray Train checkpoints of the round's fine-tunes (one run,
                                             the roles in turn; each checkpoint's metadata names its role)
    <run>/round-<k>/train-<role>/tensorboard/  each role's TensorBoard events
    <run>/round-<k>/<role>/                  exported weights, loadable by vLLM and transformers
    <run>/round-<k>/stages/<stage>.json      a finished stage of the round (for resume)
    <run>/collect/{data,alpaca,rejected}.jsonl   the final data (python -m jobs.collect, or the final stage)
    <run>/final/                             the final stage, laid out as a round ("final" for k):
        instructions/, drafts/, stats/        the last Generator's further answers (drafts only)
        length-probe/{base,final}.jsonl       the constrained probe set's answers
        train-sft/, model/                    Ray Train checkpoints; the final model's weights
        stages/<stage>.json                   finished stages (generate, collect, train, ...)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from cluster.storage import Storage

SHARD_KINDS = ("drafts", "extensions", "sft-generator", "sft-extender")
ROLES = ("generator", "extender")
FINAL = "final"  # the final stage's key where a round number goes: its folder is <run>/final/
# written last into an exported model folder (training/export.py): the export is complete
EXPORT_MARKER = "_EXPORT_COMPLETE.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


@dataclass
class RunLayout:
    store: Storage  # rooted at the run folder

    @classmethod
    def create(cls, storage: Storage, run_name: str) -> "RunLayout":
        return cls(storage.child(run_name))

    @staticmethod
    def label(k: int | str) -> str:
        """How logs name a round: "round 2", or "final"."""
        return FINAL if k == FINAL else f"round {k}"

    @staticmethod
    def round_dir(k: int | str) -> str:
        return FINAL if k == FINAL else f"round-{k}"

    def shard_file(self, k: int | str, kind: str, shard: str) -> str:
        return f"{self.round_dir(k)}/{kind}/{shard}.jsonl"

    def shard_records(self, k: int | str, kind: str) -> list[dict]:
        """Every record of round k's `kind` shards (drafts, extensions, ...), in shard order."""
        folder = f"{self.round_dir(k)}/{kind}"
        if not self.store.exists(folder):
            return []
        return [r for name in sorted(self.store.list(folder)) for r in self.store.read_jsonl(f"{folder}/{name}")]

    def stats_file(self, k: int | str, shard: str) -> str:
        return f"{self.round_dir(k)}/stats/{shard}.json"

    def model_dir(self, k: int | str, role: str) -> str:
        return f"{self.round_dir(k)}/{role}"

    # stages of a round, for resuming a job that was stopped
    def stage_file(self, k: int | str, stage: str) -> str:
        return f"{self.round_dir(k)}/stages/{stage}.json"

    def stage_done(self, k: int | str, stage: str) -> dict | None:
        rel = self.stage_file(k, stage)
        return self.store.read_json(rel) if self.store.exists(rel) else None

    def rounds(self) -> list[int]:
        """The numbers of the rounds the run has a folder for, highest first."""
        names = self.store.list("")
        return sorted((int(n.removeprefix("round-")) for n in names if re.fullmatch(r"round-\d+", n)), reverse=True)

    def exported(self, k: int | str, role: str) -> bool:
        """Whether round k's `role` (the final stage's `model`) is exported, its marker written last."""
        return self.store.exists(f"{self.model_dir(k, role)}/{EXPORT_MARKER}")

    def last_export(self, role: str, up_to: int | None = None) -> int:
        """The highest round (at most `up_to`) whose `role` is exported; 0 when none is."""
        return next((k for k in self.rounds() if (up_to is None or k <= up_to) and self.exported(k, role)), 0)

    def round_finished(self, k: int) -> dict | None:
        """Round k's last stage (its probe of the new Generator), when it is recorded."""
        return self.stage_done(k, "probe")

    def mark_done(self, k: int | str, stage: str, info: dict) -> None:
        self.store.write_json(self.stage_file(k, stage), {**info, "finished_at": time.time()})
