"""The final stage's own choices, without a cluster (the whole stage runs in the loop test,
tests/test_job_submit.py, and in `make demo`): which instructions the last Generator answers,
and how a general chat file is mixed into the final data."""

from __future__ import annotations

import json
from types import SimpleNamespace

from cluster.layout import FINAL, RunLayout
from cluster.settings import load_settings
from cluster.storage import Storage
from runtime.context import RunContext
from stages.final import FinalStage


def stage_for(tmp_path, *overrides: str) -> FinalStage:
    settings = load_settings(None, ["model.base=x", f"storage.root={tmp_path}", *overrides])
    layout = RunLayout.create(Storage.open(str(tmp_path), settings.storage), "run")
    seeds = [{"id": f"s{i}", "instruction": f"Write about {i}.", "lang": "en"} for i in range(5)]
    loop = SimpleNamespace(ctx=RunContext(settings, layout, log=lambda m: None), seeds=seeds)
    return FinalStage(loop)


def test_new_instructions_first_then_a_seeded_draw_of_the_pool_with_unique_ids(tmp_path):
    stage = stage_for(tmp_path, "final.generate_count=12", "run.rounds=1")
    stage.layout.store.write_jsonl("round-1/self-instruct/new.jsonl", [{"id": "r1", "instruction": "Old.", "lang": "en"}])
    stage.layout.store.write_jsonl(f"{FINAL}/self-instruct/new.jsonl", [{"id": "f1", "instruction": "New.", "lang": "en"}])
    chosen = stage.instructions()
    assert len(chosen) == 12 and chosen[0]["id"] == "f1#0"
    assert len({c["id"] for c in chosen}) == 12  # the pool of 6 is used twice, each time with its own id
    assert sorted(c["id"].split("#")[0] for c in chosen[1:7]) == ["r1", "s0", "s1", "s2", "s3", "s4"]
    assert [c["id"] for c in stage.instructions()] == [c["id"] for c in chosen]  # seeded: a resumed job agrees


def test_the_general_file_is_mixed_in_at_the_share_asked_for(tmp_path, monkeypatch):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"instruction": f"Hi {i}", "output": "Hello."}) + "\n" for i in range(10))
                    + "not json\n")
    stage = stage_for(tmp_path, f"final.mix_with={chat}", "final.mix_fraction=0.2")
    seen = {}

    def fake_train(settings, layout, target, init_model, files):
        seen.update(files=files, init=init_model, target=target, epochs=settings.training.epochs)
        return SimpleNamespace(export_uri="u", metrics={"train_loss": 1.0}, loss_history=[])

    monkeypatch.setattr("stages.final.train", fake_train)
    collected = {"collected": 40, "window": [60, 600], "files": {"data": "d.jsonl", "rejected": "r.jsonl"}}
    result = stage.train(collected)
    mixed = list(stage.layout.store.read_jsonl(f"{FINAL}/mix.jsonl"))
    assert result["mixed"] == len(mixed) == 10  # 0.2 of the final data: 10 next to 40
    assert seen["files"] == ["d.jsonl", stage.layout.store.uri(f"{FINAL}/mix.jsonl")]
    assert seen["init"] == stage.settings.model.base and seen["target"].export == f"{FINAL}/model"  # the base model, not a round's
    assert mixed[0]["messages"][-1] == {"role": "assistant", "content": "Hello."}
    result = stage.train(collected, {"examples": 40, "file": "c.jsonl"})  # closed cuts are final data too
    assert result["mixed"] == 20 and seen["files"][:2] == ["d.jsonl", "c.jsonl"]  # 0.2 of 100


def test_closed_cuts_are_written_by_the_served_generator_and_join_the_final_sft_data(tmp_path, monkeypatch):
    from longform.constraints import constraint_for, query_record
    from tests.scripted import ScriptedModel

    assert load_settings(None, ["model.base=x"]).final.closed_cuts is False  # an opt-in
    stage = stage_for(tmp_path, "final.closed_cuts=true", "collect.min_words=5", "collect.max_words=600")
    answer = "Rain fell on the town for days.\n\nThe river rose into the streets.\n\nThen the sun came back."
    data = [query_record("r1/a", 1, "en", "Write about rain.", "Write about rain. About 20 words.", answer,
                         constraint_for("about", 18), 18)]
    stage.layout.store.write_jsonl("collect/data.jsonl", data)
    model = ScriptedModel(cont=lambda prompt, prefix, sampling: "Everyone went outside to look at the sky, and the "
                          "children ran to the river to see how high it had come in the night.")
    monkeypatch.setattr(stage.ctx, "model", lambda role, client=None: model)
    lines = []
    stage.log = lines.append
    collected = {"collected": 1, "window": [5, 600], "files": {"data": stage.layout.store.uri("collect/data.jsonl")}}
    closed = stage.closed_cuts(collected)
    assert closed["beginnings"] == 2 and closed["examples"] == 2 and closed["set_aside"] == 0
    assert [c["prefix"] for c in model.calls] == ["Rain fell on the town for days.\n\n",
                                                  "Rain fell on the town for days.\n\nThe river rose into the streets.\n\n"]
    written = list(stage.layout.store.read_jsonl(f"{FINAL}/closed-cuts/data.jsonl"))
    assert [w["meta"]["source_id"] for w in written] == ["r1/a/cut-1", "r1/a/cut-2"]
    assert lines == ["final: the last Generator closes 2 cuts of 1 collected answers", "final: 2 closed cuts kept, 0 set aside"]

    seen = {}

    def fake_train(settings, layout, target, init_model, files):
        seen.update(files=files)
        return SimpleNamespace(export_uri="u", metrics={"train_loss": 1.0}, loss_history=[])

    monkeypatch.setattr("stages.final.train", fake_train)
    result = stage.train(collected, closed)
    assert seen["files"] == [collected["files"]["data"], closed["file"]] and result["closed_cuts"] == 2
    assert lines[-1].startswith("final: base model trained on 1 collected + 2 closed cuts + 0 mixed examples")
