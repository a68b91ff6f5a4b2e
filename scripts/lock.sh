#!/usr/bin/env bash
# Writes scripts/cpu.lock: the CPU environment that pip's resolver makes from pyproject.toml's
# pins, every package at its exact version (torch, which scripts/install.sh installs on its own,
# left out). Run it (`make lock`) after changing a pin in pyproject.toml, and commit both.
#   bash scripts/lock.sh [SCRATCH_VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-$(mktemp -d)/venv}
python=${PYTHON:-python3}
[ "$(uname -sm)" = "Linux x86_64" ] || { echo "the lock is written for Linux x86_64" >&2; exit 1; }
USE_LOCK=0 PYTHON="$python" bash scripts/install.sh "$venv"
version=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
{
  echo "# python $version, linux x86_64, vllm flavour cpu: written by scripts/lock.sh from pyproject.toml"
  echo "# (scripts/install.sh reads the Python version on the line above)"
  "$venv/bin/pip" freeze --exclude-editable 2>/dev/null | grep -v '^torch=='
} > scripts/cpu.lock
echo "== wrote scripts/cpu.lock: $(grep -vc '^#' scripts/cpu.lock) packages for Python $version"
