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
