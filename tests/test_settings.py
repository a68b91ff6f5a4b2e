import subprocess
import sys

import pytest

from cluster.settings import SettingsError, load_settings


def test_the_shipped_configs_validate(repo):
    for path in sorted((repo / "configs").glob("*.yaml")):
        settings = load_settings(path)
        assert settings.model.base


def test_overrides_are_parsed_as_yaml(repo):
    s = load_settings(repo / "configs/tiny.yaml", ["training.lr=3e-4", "run.rounds=1",
                                                    "serving.engine_env={A: b}", "synthesis.decoding.stop=[END]"])
    assert s.training.lr == 3e-4 and s.run.rounds == 1
    assert s.serving.engine_env == {"A": "b"} and s.synthesis.decoding.stop == ["END"]


@pytest.mark.parametrize("override, message", [
    ("training.lr=-1", "training.lr: Input should be greater than 0"),
    ("training.lr=fast", "training.lr: Input should be a valid number"),
    ("serving.generator.min_replicas=3", "min_replicas (3) > max_replicas (1)"),
    ("synthesis.method.min_growth=1", "synthesis.method.min_growth: Input should be greater than 1"),
    ("synthesis.decoding.stop=['---']", '"---" must not be a stop string'),
    ("ray.num_cpus=2", "ray.num_cpus: Input should be greater than or equal to 4"),
    ("trainning.lr=1", "trainning: unknown key"),
    ("run.name=a/b", "run.name: String should match pattern"),
    ("collect.endpoint.base_url=api.example.com/v1", "collect.endpoint.base_url: String should match pattern"),
    ("serving.judge.base_url=localhost:8000", "serving.judge.base_url: String should match pattern"),
])
def test_bad_values_name_the_key(repo, override, message):
    with pytest.raises(SettingsError) as err:
        load_settings(repo / "configs/tiny.yaml", [override])
    assert message in str(err.value)
    assert "configs/tiny.yaml" in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)
    (tmp_path / "nomodel.yaml").write_text("run: {rounds: 1}\n")
    with pytest.raises(SettingsError, match="model: Field required"):
        load_settings(tmp_path / "nomodel.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("run:\n  name: demo\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SettingsError) as err:
        load_settings(latin1)
    assert str(err.value) == f"{latin1}, line 3: not UTF-8 text (byte 0xe9)"
    with pytest.raises(SettingsError, match=f"^{tmp_path} is a folder, not a config file$"):
        load_settings(tmp_path)


def test_secrets_are_masked_in_the_public_dump(repo):
    s = load_settings(repo / "configs/tiny.yaml", ["storage.secret_access_key=TOPSECRET"])
    assert "TOPSECRET" not in str(s.public_dict()) and "TOPSECRET" not in repr(s)


def test_the_job_exits_non_zero_naming_the_key_before_starting_anything(repo):
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.self_lengthen", "--config", "configs/tiny.yaml", "--set", "training.epochs=0"],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "training.epochs: Input should be greater than 0" in proc.stderr
    assert "Ray" not in proc.stdout  # failed before connecting to Ray


# -- secrets never in a message (issue 16, security 2) ----------------------------------------

SECRET = "TOPSECRET-4f1c"


@pytest.mark.parametrize("overrides", [
    [f"storage.secret_access_key={SECRET}", "serving.mode=lora"],            # whole-config check fails
    [f"storage.secret_access_key=[{SECRET}]"],                                # the secret itself is bad
    [f"serving.engine_env={{HF_TOKEN: {SECRET}}}", "training.method=lora"],  # a token in a mapping
    [f"storage.access_key_id={SECRET}", "collect.min_words=9999"],           # a section check fails
    [f"storage.secret_access_key:{SECRET}"],                                  # not KEY=VALUE
    [f"storage.root=s3://AKIA:{SECRET}@host/b"],                              # credentials in a URI
    [f"storage.root=S3://AKIA:{SECRET}@bucket/b"],                            # ... its scheme mistyped
    [f"model.base=s3:/AKIA:{SECRET}@bucket/m"],                               # ... one slash short
])
def test_settings_errors_never_carry_a_secret(repo, overrides):
    with pytest.raises(SettingsError) as err:
        load_settings(repo / "configs/tiny.yaml", overrides)
    assert SECRET not in str(err.value)
    assert "***" in str(err.value)


def test_a_secret_on_a_bad_yaml_line_is_not_quoted(tmp_path):
    config = tmp_path / "leaky.yaml"
    config.write_text(f'model: {{base: x}}\nstorage:\n  secret_access_key: "{SECRET}\n')
    with pytest.raises(SettingsError) as err:
        load_settings(config)
    assert f"{config}:" in str(err.value) and "not valid YAML" in str(err.value)
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("value", [f"*{SECRET}", f"!{SECRET}"])
def test_yaml_errors_do_not_quote_the_token_they_met(repo, tmp_path, value):
    """PyYAML names an undefined alias or an unknown tag by its text: part of the value."""
    with pytest.raises(SettingsError) as err:
        load_settings(repo / "configs/tiny.yaml", [f"storage.secret_access_key={value}"])
    assert "--set storage.secret_access_key: not valid YAML" in str(err.value) and SECRET not in str(err.value)
    config = tmp_path / "leaky.yaml"
    config.write_text(f"storage:\n  secret_access_key: {value}\n")
    with pytest.raises(SettingsError) as err:
        load_settings(config)
    assert f"{config}:2: not valid YAML" in str(err.value) and SECRET not in str(err.value)


def test_the_cli_masks_overrides_and_warns_about_secrets_on_the_command_line(repo, capsys):
    import argparse

    from cluster.cli import add_settings_args, settings_from_args

    parser = argparse.ArgumentParser()
    add_settings_args(parser)
    args = parser.parse_args(["--config", str(repo / "configs/tiny.yaml"), "--set",
                              f"storage.secret_access_key={SECRET}", "--set", "serving.mode=lora"])
    with pytest.raises(SystemExit) as exit_:
        settings_from_args(args)
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and SECRET not in stderr
    assert "+ overrides storage.secret_access_key=*** serving.mode=lora" in stderr
    assert "warning: --set storage.secret_access_key=***: a secret on the command line" in stderr


def test_a_set_without_its_equals_sign_does_not_print_the_value_argparse_is_left_with(repo, capsys):
    import argparse

    from cluster.cli import add_settings_args

    parser = argparse.ArgumentParser()
    add_settings_args(parser)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--config", str(repo / "configs/tiny.yaml"), "--set", "storage.secret_access_key",
                           SECRET, "--stroage", "s3://bucket/runs"])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and SECRET not in stderr and "s3://bucket/runs" not in stderr
    assert "argument --set: expected KEY=VALUE, e.g. training.lr=1e-3 (got '***')" in stderr
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--config", str(repo / "configs/tiny.yaml"), SECRET, "--stroage", "s3://bucket/runs"])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and SECRET not in stderr and "s3://bucket/runs" not in stderr
    assert "unrecognized arguments: *** --stroage *** (values not shown; a setting is --set key=value)" in stderr


def test_a_set_without_its_equals_sign_is_refused_before_a_positional_argument_can_quote_it(capsys):
    """jobs.evaluate has a positional argument: `--set key SECRET` once put SECRET there, and
    argparse quoted it as an invalid choice."""
    from jobs import evaluate as evaluate_job

    with pytest.raises(SystemExit) as exit_:
        evaluate_job.parser().parse_args(["--config", "c.yaml", "--set", "storage.secret_access_key", SECRET, "run",
                                          "--benchmark", "longbench-write"])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and SECRET not in stderr
    assert "argument --set: expected KEY=VALUE" in stderr


def test_secret_named_keys_are_masked_in_the_stored_settings_and_repr(repo):
    s = load_settings(repo / "configs/tiny.yaml", [f"serving.generator.engine_kwargs={{hf_token: {SECRET}, seed: 1}}"])
    assert s.serving.generator.engine_kwargs["hf_token"] == SECRET  # the engine still gets it
    assert s.public_dict()["serving"]["generator"]["engine_kwargs"] == {"hf_token": "***", "seed": 1}
    assert SECRET not in repr(s)


@pytest.mark.parametrize("override, message", [
    (f"serving.engine_env={{HF_TOKEN: {SECRET}, A: b}}", "serving.engine_env: HF_TOKEN: a secret is not passed this way"),
    (f"storage.endpoint_url=http://AKIA:{SECRET}@s3.local:9000", "storage.endpoint_url: holds user:password@"),
])
def test_secrets_that_would_reach_the_dashboard_or_a_url_are_refused(repo, override, message):
    """The engines' environment is their deployment's runtime_env, which the dashboard shows."""
    with pytest.raises(SettingsError) as err:
        load_settings(repo / "configs/tiny.yaml", [override])
    assert message in str(err.value) and SECRET not in str(err.value)


@pytest.mark.parametrize("name, secret", [
    ("secret_access_key", True), ("access_key_id", True), ("HF_TOKEN", True), ("apiKey", True),
    ("password", True), ("AWS_SESSION_TOKEN", True), ("SSH_PASSPHRASE", True),
    ("max_tokens", False), ("tokenizer", False), ("api_key_env", False), ("base_url", False),
])
def test_which_names_are_secret(name, secret):
    from cluster.settings import is_secret_name

    assert is_secret_name(name) is secret


# -- a key written twice (bad input 1) --------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("model: {base: x}\ntraining:\n  lr: 1.0e-3\nrun: {rounds: 1}\ntraining:\n  epochs: 2\n",
     ":5: training is written twice (first on line 2)"),
    ("model: {base: x}\ntraining:\n  lr: 1.0e-3\n  epochs: 2\n  lr: 2.0e-3\n",
     ":5: training.lr is written twice (first on line 3)"),
    ("model: {base: x}\nevaluation:\n  benchmarks:\n    - {name: longen, data: a, data: b}\n",
     ":4: evaluation.benchmarks.0.data is written twice"),
])
def test_a_key_written_twice_is_refused_naming_file_line_and_key(tmp_path, text, message):
    config = tmp_path / "twice.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_settings(config)
    assert f"{config}{message}" in str(err.value)


def test_merge_keys_may_still_override_an_anchor(tmp_path):
    config = tmp_path / "merge.yaml"
    config.write_text("model: {base: x}\nserving:\n  generator: &role {max_replicas: 2}\n"
                      "  extender:\n    <<: *role\n    max_replicas: 3\n")
    s = load_settings(config)
    assert (s.serving.generator.max_replicas, s.serving.extender.max_replicas) == (2, 3)


def test_a_duplicate_inside_an_override_is_refused(repo):
    with pytest.raises(SettingsError, match="--set serving.engine_env: A is written twice"):
        load_settings(repo / "configs/tiny.yaml", ["serving.engine_env={A: 1, A: 2}"])


# -- inf and nan (bad input 2) ----------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("training.lr=.inf", "training.lr"),
    ("training.epochs=.inf", "training.epochs"),
    ("training.lr=inf", "training.lr"),
    ("serving.request_timeout_s=.inf", "serving.request_timeout_s"),
    ("serving.deploy_timeout_s=.nan", "serving.deploy_timeout_s"),
    ("storage.retry_timeout_s=.inf", "storage.retry_timeout_s"),
    ("final.epochs=.inf", "final.epochs"),
    ("synthesis.method.min_growth=.inf", "synthesis.method.min_growth"),
    ("synthesis.decoding.repetition_penalty=.inf", "synthesis.decoding.repetition_penalty"),
    ("serving.generator.resources={GPU: .inf}", "serving.generator.resources.GPU"),
    ("serving.engine_kwargs={gpu_memory_utilization: .nan}", "serving.engine_kwargs: gpu_memory_utilization"),
])
def test_inf_and_nan_are_refused_naming_the_key(repo, override, key):
    with pytest.raises(SettingsError) as err:
        load_settings(repo / "configs/tiny.yaml", [override])
    assert f"{key}: Input should be a finite number" in str(err.value)


# -- keys nothing reads (bad input 14) --------------------------------------------------------

def test_a_removed_key_is_an_unknown_key(repo):
    with pytest.raises(SettingsError, match="training.replay: unknown key"):
        load_settings(repo / "configs/tiny.yaml", ["training.replay=extra.jsonl"])


def test_every_settings_key_is_read_somewhere_in_the_product(repo):
    import re

    from pydantic import BaseModel

    from cluster.settings import Settings
    from longform.params import Decoding

    product = "\n".join(path.read_text() for folder in ("jobs", "runtime", "stages", "actors", "training", "cluster", "evaluation", "reports", "longform")
                        for path in (repo / folder).rglob("*.py")
                        if path.relative_to(repo).as_posix() not in ("cluster/settings.py", "longform/params.py"))

    def unread(model: type[BaseModel], prefix: str):
        for name, field in model.model_fields.items():
            dotted = prefix + name
            if not re.search(rf"\.{name}\b|[\"']{name}[\"']", product):
                yield dotted
            nested = field.annotation if isinstance(field.annotation, type) else None
            # Decoding sections are sent whole
            if nested and issubclass(nested, BaseModel) and not issubclass(nested, Decoding):
                yield from unread(nested, dotted + ".")

    assert list(unread(Settings, "")) == []


# -- cross-field checks name their keys -------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (["serving.generator.min_replicas=3"], "serving.generator: min_replicas (3) > max_replicas (1)"),
    (["serving.extender.min_replicas=2"], "serving.extender: min_replicas (2) > max_replicas (1)"),
    (["training.method=lora"], "training.method 'lora' exports adapters, which serving.mode 'full' cannot"),
    (["serving.mode=lora"], "serving.mode 'lora' serves LoRA adapters: set training.method to 'lora'"),
    (["serving.mode=lora", "training.method=lora"], "serving.mode 'lora' needs storage.root on s3://"),
    (["collect.min_words=700"], "collect: min_words (700) is above max_words (600)"),
    (["final.probe_words=[300, 100]"], "final: probe_words must be [lo, hi] with 0 < lo <= hi"),
    (["final.probe_words=[0, 100]"], "final: probe_words must be [lo, hi] with 0 < lo <= hi"),
    (["final.probe_words=[5, 100]"], "final: probe_words: 5 words is too few to ask for"),
    (["final.mix_fraction=0.2"], "final: mix_fraction is set but mix_with names no file"),
    (["evaluation.after_each_round=true"], "evaluation: after_each_round needs at least one entry in benchmarks"),
    (["collect.endpoint.base_url=http://x/v1"], "collect.endpoint: an endpoint needs a model name (model)"),
    (["evaluation.endpoint.base_url=http://x/v1"], "evaluation.endpoint: an endpoint needs a model name (model)"),
    (["agentwrite.endpoint.base_url=http://x/v1"], "agentwrite.endpoint: an endpoint needs a model name (model)"),
    (["serving.judge.source=endpoint"], "serving.judge: source 'endpoint' needs base_url and model"),
])
def test_cross_field_errors_name_their_keys(repo, overrides, message):
    with pytest.raises(SettingsError) as err:
        load_settings(repo / "configs/tiny.yaml", overrides)
    assert f"\n  {message}" in str(err.value)


def test_the_engines_load_safetensors_only():
    """A pickled checkpoint must not run code in an engine: another load_format is refused by
    the settings, and the deployments always ask for safetensors."""
    for key in ("serving.engine_kwargs", "serving.generator.engine_kwargs"):
        with pytest.raises(SettingsError, match=f"{key}.*load_format: the engines load safetensors only, not 'pt'"):
            load_settings(None, [f"{key}={{load_format: pt}}"])
    settings = load_settings(None, ["model.base=x", "serving.engine_kwargs={load_format: safetensors}"])
    from actors.serving import llm_config

    config = llm_config("generator", "/m", settings.serving.generator, settings)
    assert config.engine_kwargs["load_format"] == "safetensors"


def test_text_flags_are_taken_as_typed_not_as_yaml(repo):
    """--run-name 0042 is the run "0042" (YAML would read the octal number 34), 2025-01-15 a name,
    not a date."""
    import argparse

    from cluster.cli import add_settings_args, settings_from_args

    parser = argparse.ArgumentParser()
    add_settings_args(parser)
    for name in ("0042", "2025-01-15", "1e3"):
        args = parser.parse_args(["--config", str(repo / "configs/tiny.yaml"), "--run-name", name,
                                  "--storage", f"runs/{name}"])
        s = settings_from_args(args)
        assert s.run.name == name and s.storage.root.endswith(f"runs/{name}")
