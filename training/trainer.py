"""Fine-tune one role for one round on Ray Train: a `TorchTrainer` whose workers run
`training.worker.train_func` (transformers' Trainer under DeepSpeed ZeRO-3).

    result = train_role(settings, layout, round=1, role="generator",
                        init_model=..., data_files=[...])

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


def train_role(
    settings: Settings, layout: RunLayout, round: int, role: str, init_model: str,
    data_files: list[str], init_adapter: str | None = None,
) -> TrainResult:
    """One role of the loop, for one round."""
    target = Target(layout.round_dir(round), f"train-{role}", layout.model_dir(round, role), f"{role} r{round}")
    return train(settings, layout, target, init_model, data_files, init_adapter)


def train(
    settings: Settings, layout: RunLayout, target: Target, init_model: str,
    data_files: list[str], init_adapter: str | None = None, method: str = "sft",
) -> TrainResult:
    """`method` "sft": chat records; "dpo": preference pairs (training/dpo.py)."""
    t = settings.training
    filesystem, root = layout.store.pyarrow()
    config = {
        "settings": settings,
        "label": target.label,
        "method": method,
        "init_model": init_model,
        "init_adapter": init_adapter,
        "data_files": data_files,
        "run_root": layout.store.uri(),
        "export": target.export,
        "tensorboard": f"{target.folder}/{target.name}/tensorboard",
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
            name=target.name,
            storage_path=f"{root}/{target.folder}",
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
    if result.error:
        raise RuntimeError(f"training {target.label} failed: {result.error}")
    marker = f"{target.export}/{EXPORT_MARKER}"
    if not layout.store.exists(marker):
        raise RuntimeError(f"training {target.label} finished without an export at {target.export}")
    metrics = layout.store.read_json(marker)["metrics"]
    history = metrics.pop("loss_history", [])
    return TrainResult(layout.store.uri(target.export), metrics, history)
