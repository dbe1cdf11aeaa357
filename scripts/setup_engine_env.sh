#!/usr/bin/env bash
# Create (or reuse) a virtual environment with the engine distribution (packaging/engine) installed
# editable from this checkout, for development, the demo and the engine's tests.
# usage: setup_engine_env.sh VENV_DIR [EXTRAS]   (EXTRAS: comma-separated, default "plots"; e.g. "train,plots,dev")
# torch is installed first, as DEEPEMHANCER_TORCH (default torch==2.13.0) with DEEPEMHANCER_TORCH_PIP_OPTIONS
# (e.g. "--index-url https://download.pytorch.org/whl/cpu"), the same variables as the plugin's installb:
# an unconstrained torch would pull PyPI's CUDA build (about 2.7 GB with its nvidia-* wheels).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$1"
EXTRAS="${2-plots}"
PY="${PYTHON:-python3}"
PIP=(--disable-pip-version-check -q)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC2086  # the options are words on purpose
"$VENV/bin/python" -m pip install "${PIP[@]}" ${DEEPEMHANCER_TORCH_PIP_OPTIONS:-} "${DEEPEMHANCER_TORCH:-torch==2.13.0}"
"$VENV/bin/python" -m pip install "${PIP[@]}" -e "$ROOT/packaging/engine${EXTRAS:+[$EXTRAS]}"
