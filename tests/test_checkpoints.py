"""Choosing the checkpoint to resume from: a damaged one is named and skipped for the one
before it; with none usable the error names every one and what is wrong with it. A checkpoint
whose files do not match the sha256 manifest its ranks wrote (DeepSpeed's files are pickles)
is refused the same way. (A real killed-and-rerun training job with a damaged checkpoint:
tests/test_training.py.)"""

import json
import pickle
import shutil

import pytest
import torch
from ray.train import Checkpoint

from training.checkpoints import OWNER, CheckpointError, checkpoint_problem, pick_resume, write_manifest


def make_checkpoint(root, name: str, step: int):
    """A folder shaped like one the Trainer saves under DeepSpeed, as Ray Train stores it: each
    rank's files and its manifest, merged into one folder."""
    inner = root / name / "checkpoint"
    shards = inner / f"global_step{step}"
    for rank in range(2):  # each rank writes its part and its manifest in a folder of its own
        own = root / f"rank-{rank}" / name
        (own / f"global_step{step}").mkdir(parents=True)
        if rank == 0:
            (own / "trainer_state.json").write_text(json.dumps({"global_step": step}))
            (own / "latest").write_text(f"global_step{step}")
        torch.save({"rank": rank, "w": torch.ones(64)}, own / f"global_step{step}" / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
        write_manifest(str(own), rank)
        shutil.copytree(own, inner, dirs_exist_ok=True)
    assert shards.is_dir()
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


def test_in_a_run_of_several_fine_tunes_each_resumes_from_its_own_checkpoints(three, tmp_path):
    """The Generator's and the Extender's fine-tunes share one Ray Train run, which hands the
    workers its last checkpoint whoever wrote it (the run's checkpoint metadata says who)."""
    run, _ = three
    for i, owner in enumerate(("generator r1", "generator r1", "extender r1")):
        Checkpoint(str(run / f"checkpoint_2026-11-22_10-00-0{i}.000000")).set_metadata({OWNER: owner})
    last = Checkpoint(str(run / "checkpoint_2026-11-22_10-00-02.000000"))
    assert pick_resume(last, str(tmp_path / "a"), print, "extender r1")[1] == 9
    assert pick_resume(last, str(tmp_path / "b"), print, "generator r1")[1] == 6  # its own newest
    # a fine-tune that has written none yet starts from the beginning, not from another's weights
    assert pick_resume(last, str(tmp_path / "c"), print, "generator r2") == (None, 0, [])
    assert pick_resume(last, str(tmp_path / "d"), print)[1] == 9  # a run of one fine-tune: its last


class Exploit:
    """What an attacker would plant: unpickling it runs code."""

    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_a_file_that_does_not_match_its_manifest_is_refused(three, tmp_path):
    run, (_, second, third) = three
    # a valid zip archive that is not what the rank wrote: the structural checks pass
    shard = third / "global_step9" / "zero_pp_rank_1_mp_rank_00_model_states.pt"
    torch.save({"rank": 1, "w": torch.zeros(64), "payload": pickle.dumps(Exploit())}, shard)
    problem = checkpoint_problem(str(third))
    assert "do not match the sha256" in problem and "zero_pp_rank_1_mp_rank_00_model_states.pt" in problem
    # a file slipped in next to the recorded ones
    torch.save({"payload": pickle.dumps(Exploit())}, second / "global_step6" / "extra.pt")
    assert "not in its manifest: global_step6/extra.pt" in checkpoint_problem(str(second))

    warnings = []
    path, step, skipped = pick_resume(Checkpoint(str(run / "checkpoint_2026-11-22_10-00-02.000000")),
                                      str(tmp_path / "local"), warnings.append)
    assert step == 3, "the newest two checkpoints do not match their manifests: resume from the first"
    assert len(skipped) == 2 and "sha256" in skipped[0] and "not in its manifest" in skipped[1]
    assert "checkpoint_2026-11-22_10-00-02" in warnings[0] and "checkpoint_2026-11-22_10-00-01" in warnings[1]


def test_a_checkpoint_without_its_manifest_or_with_an_edited_one_is_refused(three):
    _, (first, second, third) = three
    (first / "manifest-rank-0.json").unlink()  # rank 0's files are no longer listed by anyone
    assert "not in its manifest" in checkpoint_problem(str(first))
    for name in ("manifest-rank-0.json", "manifest-rank-1.json"):
        (second / name).unlink()
    assert "no manifest" in checkpoint_problem(str(second))
    manifest = json.loads((third / "manifest-rank-1.json").read_text())
    manifest["sha256"]["trainer_state.json"] = "0" * 64  # claims a file rank 0 recorded otherwise
    (third / "manifest-rank-1.json").write_text(json.dumps(manifest))
    assert "manifests disagree about trainer_state.json" in checkpoint_problem(str(third))
    (third / "manifest-rank-1.json").write_text("{not json")
    assert "manifest manifest-rank-1.json does not parse" in checkpoint_problem(str(third))


# -- weights are read as safetensors only ---------------------------------------------------
def test_a_model_folder_with_only_pytorch_model_bin_is_refused(tiny_model, tmp_path, repo):
    """The same weights as a pickle (which transformers would load otherwise) are refused."""
    from safetensors.torch import load_file

    from cluster.settings import load_settings
    from training.export import reload
    from training.worker import load_model

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(tiny_model / "model.safetensors"), folder / "pytorch_model.bin")
    settings = load_settings(repo / "configs/tiny.yaml", [f"model.base={folder}"])
    with pytest.raises(OSError, match="model.safetensors"):
        load_model({"init_model": str(folder)}, settings, str(tmp_path / "local"))
    with pytest.raises(OSError, match="model.safetensors"):
        reload(str(folder), str(folder), lora=False)


def test_an_adapter_with_only_adapter_model_bin_is_refused(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.export import reload, require_safetensors_adapter

    adapter = tmp_path / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(adapter, safe_serialization=False)
    assert (adapter / "adapter_model.bin").exists() and not (adapter / "adapter_model.safetensors").exists()
    with pytest.raises(ValueError, match="no adapter_model.safetensors"):
        require_safetensors_adapter(str(adapter))
    with pytest.raises(ValueError, match="pickled weights are not loaded"):
        reload(str(adapter), str(tiny_model), lora=True)
