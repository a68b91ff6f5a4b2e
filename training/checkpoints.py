"""Which checkpoint a restarted or rerun training job resumes from.

Ray Train hands the workers the last checkpoint it registered. That folder can still be
unusable: a job killed while uploading it, a storage fault, someone's hand. Resuming from it
would fail deep inside DeepSpeed with an error that names no file, and the same failure would
repeat on every retry. So each candidate is checked first (the Trainer's state parses, the
DeepSpeed folder that `latest` names exists, and every torch file in it is a complete zip
archive: a truncated one loses its central directory); a bad one is skipped with a warning
naming it, and the previous checkpoint on storage is tried. If none is usable the job stops
with an error naming each checkpoint and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import zipfile

import pyarrow.fs as pafs
from ray.train import Checkpoint

INNER = "checkpoint"  # each reported checkpoint holds the Trainer's folder under this name


class CheckpointError(RuntimeError):
    pass


def checkpoint_problem(path: str) -> str | None:
    """What makes the Trainer checkpoint folder `path` unusable, or None if it looks whole."""
    try:
        with open(os.path.join(path, "trainer_state.json")) as f:
            int(json.load(f)["global_step"])
    except FileNotFoundError:
        return "trainer_state.json is missing"
    except (ValueError, KeyError, TypeError):
        return "trainer_state.json does not parse or has no global_step"
    latest = os.path.join(path, "latest")
    if not os.path.exists(latest):
        return "no DeepSpeed 'latest' file"
    with open(latest) as f:
        tag = f.read().strip()
    shards = os.path.join(path, tag)
    files = sorted(os.listdir(shards)) if os.path.isdir(shards) else []
    if not files:
        return f"DeepSpeed folder {tag!r} named by 'latest' is missing or empty"
    broken = [name for name in files if name.endswith(".pt") and not zipfile.is_zipfile(os.path.join(shards, name))]
    if broken:
        return f"truncated or unreadable DeepSpeed file(s) in {tag}: {', '.join(broken)}"
    return None


def step_of(path: str) -> int:
    with open(os.path.join(path, "trainer_state.json")) as f:
        return int(json.load(f)["global_step"])


def earlier_checkpoints(checkpoint: Checkpoint) -> list[Checkpoint]:
    """The run's other checkpoints on storage that sort before `checkpoint`, newest first
    (Ray Train names them checkpoint_<timestamp>)."""
    fs = checkpoint.filesystem
    parent, name = checkpoint.path.rstrip("/").rsplit("/", 1)
    infos = fs.get_file_info(pafs.FileSelector(parent))
    names = sorted((i.base_name for i in infos
                    if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")
                    and i.base_name < name), reverse=True)
    return [Checkpoint(f"{parent}/{n}", fs) for n in names]


def pick_resume(checkpoint: Checkpoint | None, local: str, warn=print) -> tuple[str | None, int, list[str]]:
    """(Trainer folder to resume from, its step, the checkpoints skipped with their reasons)."""
    if checkpoint is None:
        return None, 0, []
    skipped = []
    for i, candidate in enumerate([checkpoint, *earlier_checkpoints(checkpoint)]):
        path = os.path.join(candidate.to_directory(f"{local}/resume-{i}"), INNER)
        problem = checkpoint_problem(path)
        if problem is None:
            return path, step_of(path), skipped
        skipped.append(f"{candidate.path}: {problem}")
        warn(f"WARNING: checkpoint {candidate.path} is unusable ({problem}); trying the one before it")
    raise CheckpointError("no usable checkpoint to resume from: " + "; ".join(skipped)
                          + ". Delete these folders to run this training stage from the start.")
