#!/usr/bin/env bash
# Create (or reuse) a virtual environment with the engine installed in editable mode.
# usage: setup_engine_env.sh VENV_DIR [PIP_TARGET]   (PIP_TARGET default ".[engine,plots]")
# torch is pinned to 2.13.0: on this machine that is a CPU wheel on local disk; an unpinned torch would
# pull a CUDA build of several GB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$1"
TARGET="${2:-.[engine,plots]}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==${DEEPEMHANCER_TORCH_VERSION:-2.13.0}"
(cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$TARGET")
