"""scripts/install.sh: where torch comes from (its --print-torch-source mode, which installs
nothing and reaches no host but 127.0.0.1), and pyproject.toml's exact pins."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "install.sh"


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def requirements() -> list[Requirement]:
    project = pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [Requirement(line) for line in lines]


def torch_pin() -> str:
    (req,) = [r for r in requirements() if r.name == "torch"]
    (spec,) = req.specifier
    return spec.version


def torch_source(tmp_path: Path, *, gpu: bool = False, **env: str) -> str:
    """The script's one line about torch, with nvidia-smi answering as `gpu` says."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nexit {0 if gpu else 1}\n")
    fake.chmod(0o755)
    base = {k: v for k, v in os.environ.items()
            if k not in ("TORCH_INDEX_URL", "TORCH_CPU_INDEX_URL") and not k.lower().endswith("_proxy")}
    base.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHON=sys.executable, **env)
    done = subprocess.run(["bash", str(SCRIPT), "--print-torch-source", str(tmp_path / "venv")],
                          env=base, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "venv").exists(), "--print-torch-source must not create the venv"
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return lines[0]


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that refuses connections: bound, never listening, held for the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def local_index(tmp_path: Path):
    """A CPU wheel index on 127.0.0.1 that has a torch page."""
    root = tmp_path / "index"
    (root / "whl" / "cpu" / "torch").mkdir(parents=True)
    (root / "whl" / "cpu" / "torch" / "index.html").write_text("<html></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    finally:
        server.shutdown()
        server.server_close()


def test_torch_index_url_is_used_as_given(tmp_path, closed_port):
    line = torch_source(tmp_path, TORCH_INDEX_URL="http://127.0.0.1:1/my/index",
                        TORCH_CPU_INDEX_URL=f"http://127.0.0.1:{closed_port}/whl/cpu")
    assert line == f"== torch=={torch_pin()}+cpu from TORCH_INDEX_URL (http://127.0.0.1:1/my/index)"


def test_cpu_machine_takes_the_cpu_index_when_it_answers(tmp_path, local_index):
    line = torch_source(tmp_path, TORCH_CPU_INDEX_URL=local_index)
    assert line == f"== torch=={torch_pin()}+cpu from PyTorch's CPU wheel index ({local_index})"


def test_cpu_machine_falls_back_to_pips_sources_when_the_index_is_unreachable(tmp_path, closed_port):
    index = f"http://127.0.0.1:{closed_port}/whl/cpu"
    line = torch_source(tmp_path, TORCH_CPU_INDEX_URL=index)
    assert line.startswith(f"== torch=={torch_pin()}+cpu from pip's configured sources: "
                           f"PyTorch's CPU wheel index ({index}) did not answer ("), line
    assert "refused" in line.lower(), line


def test_gpu_machine_keeps_pips_sources_and_probes_nothing(tmp_path, closed_port):
    line = torch_source(tmp_path, gpu=True, TORCH_CPU_INDEX_URL=f"http://127.0.0.1:{closed_port}/whl/cpu")
    assert line == f"== torch=={torch_pin()} from pip's configured sources (GPU machine: the default build, CUDA 13.0)"


def test_every_dependency_is_pinned_exactly():
    reqs = requirements()
    assert len(reqs) > 10
    loose = [str(r) for r in reqs if [s.operator for s in r.specifier] != ["=="]]
    assert not loose, f"not pinned with ==: {loose}"


def lock() -> dict[str, str]:
    """scripts/cpu.lock as {canonical name: version}."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "scripts" / "cpu.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_cpu_lock_agrees_with_every_pin_in_pyproject():
    """A pin changed in pyproject.toml without `make lock` would install the old version on CPU."""
    from packaging.utils import canonicalize_name

    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    pinned = [Requirement(line) for line in [*project["dependencies"], *extras["cpu"], *extras["dev"]]]
    pins = lock()
    assert len(pins) > len(pinned)
    wrong = {r.name: (next(iter(r.specifier)).version, pins.get(canonicalize_name(r.name)))
             for r in pinned if r.name != "torch"
             and pins.get(canonicalize_name(r.name)) != next(iter(r.specifier)).version}
    assert not wrong, f"pyproject.toml pin vs scripts/cpu.lock: {wrong}; run `make lock`"
    # torch comes from install.sh's own step; these three must never come in on CPU
    assert not {"torch", "torchvision", "torchaudio", "torchcodec"} & set(pins)


def test_an_unknown_part_is_refused_before_anything_is_installed(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--part", "everything", str(tmp_path / "venv")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--part takes base or rest, not 'everything'" in done.stderr
    assert not (tmp_path / "venv").exists()
