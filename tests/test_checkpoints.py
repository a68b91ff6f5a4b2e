"""Choosing the checkpoint to resume from: a damaged one is named and skipped for the one
before it; with none usable the error names every one and what is wrong with it. (A real
killed-and-rerun training job with a damaged checkpoint: tests/test_training.py.)"""

import json

import pytest
import torch
from ray.train import Checkpoint

from training.checkpoints import CheckpointError, checkpoint_problem, pick_resume


def make_checkpoint(root, name: str, step: int):
    """A folder shaped like one the Trainer saves under DeepSpeed, as Ray Train stores it."""
    inner = root / name / "checkpoint"
    shards = inner / f"global_step{step}"
    shards.mkdir(parents=True)
    (inner / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (inner / "latest").write_text(f"global_step{step}")
    for rank in range(2):
        torch.save({"rank": rank, "w": torch.ones(64)}, shards / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
    return inner


def truncate(path, keep: int = 100):
    path.write_bytes(path.read_bytes()[:keep])


@pytest.fixture()
def three(tmp_path):
    run = tmp_path / "train-generator"
    return run, [make_checkpoint(run, f"checkpoint_2026-11-22_10-00-0{i}.000000", step)
                 for i, step in enumerate((3, 6, 9))]


def test_a_whole_checkpoint_passes_and_damage_is_named(three):
    _, (first, second, third) = three
    assert checkpoint_problem(str(first)) is None
    truncate(second / "global_step6" / "zero_pp_rank_1_mp_rank_00_model_states.pt")
    assert "zero_pp_rank_1_mp_rank_00_model_states.pt" in checkpoint_problem(str(second))
    (third / "trainer_state.json").write_text("{not json")
    assert "trainer_state.json" in checkpoint_problem(str(third))
    (first / "latest").write_text("global_step99")
    assert "global_step99" in checkpoint_problem(str(first))


def test_the_newest_damaged_falls_back_to_the_one_before(three, tmp_path):
    run, (_, _, third) = three
    truncate(third / "global_step9" / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    warnings = []
    path, step, skipped = pick_resume(Checkpoint(str(run / "checkpoint_2026-11-22_10-00-02.000000")),
                                      str(tmp_path / "local"), warnings.append)
    assert step == 6 and path.endswith("checkpoint")
    assert len(skipped) == 1 and "checkpoint_2026-11-22_10-00-02" in skipped[0] and "truncated" in skipped[0]
    assert warnings and "checkpoint_2026-11-22_10-00-02" in warnings[0]


def test_no_usable_checkpoint_is_a_clear_error(three, tmp_path):
    run, checkpoints = three
    for inner in checkpoints:
        (inner / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError) as err:
        pick_resume(Checkpoint(str(run / "checkpoint_2026-11-22_10-00-02.000000")), str(tmp_path / "local"), print)
    message = str(err.value)
    assert all(f"checkpoint_2026-11-22_10-00-0{i}" in message for i in range(3))
    assert "trainer_state.json is missing" in message and "Delete these folders" in message


def test_no_checkpoint_means_from_the_start(tmp_path):
    assert pick_resume(None, str(tmp_path), print) == (None, 0, [])
