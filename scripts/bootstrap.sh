#!/usr/bin/env bash
# Creates .venv (once) and installs ldifs_hf into it with its test extras.
# torch: if the venv has none, we pin the release this project is tested with; set TORCH_SPEC to
# choose another (e.g. TORCH_SPEC="torch==2.13.0" or a CUDA/CPU build you prefer).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  "$VPY" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
"$VPY" -m pip install -q -e ".[test]"
