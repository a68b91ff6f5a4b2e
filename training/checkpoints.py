"""Which checkpoint a restarted or rerun training job resumes from.

Ray Train hands the workers the last checkpoint it registered. That folder can still be
unusable: a job killed while uploading it, a storage fault, someone's hand. Resuming from it
would fail deep inside DeepSpeed with an error that names no file, and the same failure would
repeat on every retry. So each candidate is checked first (the Trainer's state parses, the
DeepSpeed folder that `latest` names exists, and every torch file in it is a complete zip
archive: a truncated one loses its central directory); a bad one is skipped with a warning
naming it, and the previous checkpoint on storage is tried. If none is usable the job stops
with an error naming each checkpoint and what is wrong with it.

DeepSpeed's files are pickles (it loads them with `torch.load(weights_only=False)`), so a
checkpoint is also refused unless it matches its manifest: when a worker reports a
checkpoint it records the sha256 of every file it wrote (`manifest-rank-<r>.json`, one per
rank, as Ray Train merges the ranks' folders into one); on resume every file must be listed
by a manifest with that digest, and nothing unlisted may be there. This catches a damaged,
partly replaced or mixed-up checkpoint. It cannot stop someone who can write the bucket, who
can write a matching manifest too: write access to the run's storage remains trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import pyarrow.fs as pafs
from ray.train import Checkpoint

INNER = "checkpoint"  # each reported checkpoint holds the Trainer's folder under this name
MANIFEST_PREFIX = "manifest-rank-"  # + "<rank>.json": {"sha256": {relative path: hex digest}}
OWNER = "fine_tune"  # checkpoint metadata: the fine-tune that wrote it, in a Ray Train run of several


class CheckpointError(RuntimeError):
    pass


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_manifest(rel: str) -> bool:
    return "/" not in rel and rel.startswith(MANIFEST_PREFIX) and rel.endswith(".json")


def files_under(path: str) -> list[str]:
    """Every file below `path`, as paths relative to it with '/' separators."""
    found = []
    for folder, _, names in os.walk(path):
        for name in names:
            found.append(os.path.relpath(os.path.join(folder, name), path).replace(os.sep, "/"))
    return sorted(found)


def write_manifest(path: str, rank: int) -> str:
    """Record the sha256 of every file this rank put in the Trainer folder `path` (called on
    each rank before it reports the folder); returns the manifest's name."""
    name = f"{MANIFEST_PREFIX}{rank}.json"
    digests = {rel: sha256_of(os.path.join(path, rel)) for rel in files_under(path) if not is_manifest(rel)}
    with open(os.path.join(path, name), "w") as f:
        json.dump({"sha256": digests}, f, indent=0, sort_keys=True)
    return name


def manifest_problem(path: str) -> str | None:
    """What in the Trainer folder `path` disagrees with its manifests, or None."""
    files = files_under(path)
    manifests = [rel for rel in files if is_manifest(rel)]
    if not manifests:
        return "no manifest (sha256 of its files), so its pickled files cannot be trusted"
    recorded: dict[str, str] = {}
    for name in manifests:
        try:
            with open(os.path.join(path, name)) as f:
                digests = json.load(f)["sha256"]
            if not isinstance(digests, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return f"manifest {name} does not parse"
        for rel, digest in digests.items():
            if recorded.setdefault(rel, digest) != digest:
                return f"manifests disagree about {rel}"
    unlisted = [rel for rel in files if not is_manifest(rel) and rel not in recorded]
    if unlisted:
        return f"file(s) not in its manifest: {', '.join(unlisted[:5])}"
    missing = [rel for rel in recorded if not os.path.isfile(os.path.join(path, rel))]
    if missing:
        return f"file(s) in its manifest are missing: {', '.join(sorted(missing)[:5])}"
    changed = [rel for rel, digest in sorted(recorded.items()) if sha256_of(os.path.join(path, rel)) != digest]
    if changed:
        return f"file(s) do not match the sha256 in its manifest: {', '.join(changed[:5])}"
    return None


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
    return manifest_problem(path)


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


def pick_resume(checkpoint: Checkpoint | None, local: str, warn=print,
                owner: str | None = None) -> tuple[str | None, int, list[str]]:
    """(Trainer folder to resume from, its step, the checkpoints skipped with their reasons).
    With `owner`, only the checkpoints that fine-tune wrote are candidates (a Ray Train run of
    several fine-tunes hands its workers the run's last checkpoint, whichever wrote it)."""
    if checkpoint is None:
        return None, 0, []
    candidates = [checkpoint, *earlier_checkpoints(checkpoint)]
    if owner is not None:
        candidates = [c for c in candidates if c.get_metadata().get(OWNER) == owner]
    skipped = []
    for i, candidate in enumerate(candidates):
        path = os.path.join(candidate.to_directory(f"{local}/resume-{i}"), INNER)
        problem = checkpoint_problem(path)
        if problem is None:
            return path, step_of(path), skipped
        skipped.append(f"{candidate.path}: {problem}")
        warn(f"WARNING: checkpoint {candidate.path} is unusable ({problem}); trying the one before it")
    if not skipped:  # none of them this fine-tune's: it starts from the beginning
        return None, 0, []
    raise CheckpointError("no usable checkpoint to resume from: " + "; ".join(skipped)
                          + ". Delete these folders to run this training stage from the start.")
