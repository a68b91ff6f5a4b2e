"""Fine-tunes on Ray Train: a `TorchTrainer` whose workers run `training.worker.train_func`
(transformers' Trainer under DeepSpeed ZeRO-3).

    result = train_role(settings, layout, round=1, role="generator",
                        init_model=..., data_files=[...])
    results = train_in_turn(settings, layout, "round-1", "train-generator-extender",
                            [FineTune(target, init_model, files), ...])

`train_in_turn` runs several fine-tunes one after the other in one Ray Train run: its controller
and workers start once (on two cores ~12 s a run: processes, imports, the process group), and
each fine-tune still has its own data, weights, checkpoints, export and metrics.

The cluster details stay here: number of workers, GPUs or CPUs per worker, NCCL or gloo,
where checkpoints go (the run's storage, local or S3), how many worker failures to survive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from cluster.layout import EXPORT_MARKER, RunLayout
from cluster.ray_cluster import worker_env
from cluster.settings import Settings
from training.worker import train_func

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    export_uri: str
    metrics: dict
    loss_history: list[dict]


@dataclass(frozen=True)
class Target:
    """Where one fine-tune keeps its Ray Train checkpoints (<folder>/<name>/) and its export."""

    folder: str  # relative to the run, e.g. "round-1" or "final"
    name: str  # the Ray Train run, e.g. "train-generator"
    export: str  # relative to the run: the weights for serving
    label: str  # in progress lines and errors, e.g. "generator r1"


@dataclass(frozen=True)
class FineTune:
    """One fine-tune of a Ray Train run. `method` "sft": chat records; "dpo": preference pairs
    (training/dpo.py)."""

    target: Target
    init_model: str
    data_files: list[str]
    init_adapter: str | None = None
    method: str = "sft"


def train_role(
    settings: Settings, layout: RunLayout, round: int, role: str, init_model: str,
    data_files: list[str], init_adapter: str | None = None,
) -> TrainResult:
    """One role of the loop, for one round."""
    return train(settings, layout, role_target(layout, round, role), init_model, data_files, init_adapter)


def role_target(layout: RunLayout, round: int, role: str) -> Target:
    return Target(layout.round_dir(round), f"train-{role}", layout.model_dir(round, role), f"{role} r{round}")


def train(
    settings: Settings, layout: RunLayout, target: Target, init_model: str,
    data_files: list[str], init_adapter: str | None = None, method: str = "sft",
) -> TrainResult:
    """One fine-tune, its Ray Train run named and placed as `target` says."""
    (result,) = train_in_turn(settings, layout, target.folder, target.name,
                              [FineTune(target, init_model, data_files, init_adapter, method)])
    return result


def train_in_turn(settings: Settings, layout: RunLayout, folder: str, name: str,
                  fine_tunes: list[FineTune]) -> list[TrainResult]:
    """`fine_tunes` one after the other in one Ray Train run (its checkpoints under
    <folder>/<name>/). A restarted worker group passes over those already exported and resumes
    the next from its own last checkpoint."""
    t = settings.training
    filesystem, root = layout.store.pyarrow()
    config = {
        "settings": settings,
        "run_root": layout.store.uri(),
        "fine_tunes": [{
            "label": f.target.label,
            "method": f.method,
            "init_model": f.init_model,
            "init_adapter": f.init_adapter,
            "data_files": f.data_files,
            "export": f.target.export,
            "tensorboard": f"{f.target.folder}/{f.target.name}/tensorboard",
        } for f in fine_tunes],
    }
    trainer = TorchTrainer(
        train_func,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=dict(t.resources_per_worker),
            placement_strategy=t.placement_strategy,
        ),
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        run_config=RunConfig(
            name=name,
            storage_path=f"{root}/{folder}",
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # Ray Train's print patch sends every print to a logger *and* to any stream a library
            # swapped in: progress lines came twice, and dill's captured bytecode listings (datasets
            # hashing TRL's map functions) leaked into the job's output
            worker_runtime_env={"env_vars": {**worker_env(settings), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
    )
    result = trainer.fit()
    labels = " and ".join(f.target.label for f in fine_tunes)
    if result.error:
        raise RuntimeError(f"training {labels} failed: {result.error}")
    return [exported(layout, f.target) for f in fine_tunes]


def exported(layout: RunLayout, target: Target) -> TrainResult:
    marker = f"{target.export}/{EXPORT_MARKER}"
    if not layout.store.exists(marker):
        raise RuntimeError(f"training {target.label} finished without an export at {target.export}")
    metrics = layout.store.read_json(marker)["metrics"]
    history = metrics.pop("loss_history", [])
    return TrainResult(layout.store.uri(target.export), metrics, history)
