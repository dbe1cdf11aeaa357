#!/usr/bin/env bash
# Idempotent headless Scipion 3 set-up for this plugin (recipe: docs "scipion-headless").
#
#   .ci/setup_scipion.sh PREFIX [--no-engine | --reinstall-engine]
#
# Creates (or reuses) under PREFIX:
#   PREFIX/venv       Scipion's Python env: scipion-pyworkflow/-em/-app pinned from PyPI, pytest,
#                     the py3.11 importlib fix (.pth), a `scipion3` wrapper, this repo installed editable
#   PREFIX/home       SCIPION_HOME (config/scipion.conf + hosts.conf, software/em/ = managed envs)
#   PREFIX/userdata   SCIPION_USER_DATA (test projects)
# then runs `scipion3 installb deepemhancer` (the engine's managed env: venv, or conda when configured;
# skipped with --no-engine; --reinstall-engine removes it first, e.g. after engine changes without a
# version bump, since installb skips a target whose files exist) and prints the variables to export.
# It can be sourced (.ci/run does): the exports then stay in the caller's shell.
#
# Variables honoured: PYTHON (interpreter for the Scipion venv, default python3.11 or python3),
# DEEPEMHANCER_TORCH (pip requirement for torch in the managed env, default torch==2.13.0),
# DEEPEMHANCER_ENV_BACKEND (auto|venv|conda), CONDA_ACTIVATION_CMD.
set -euo pipefail

PREFIX="${1:?usage: $0 PREFIX [--no-engine]}"
WITH_ENGINE=1
REINSTALL=0
[ "${2:-}" = "--no-engine" ] && WITH_ENGINE=0
[ "${2:-}" = "--reinstall-engine" ] && REINSTALL=1
mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$PREFIX/venv"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
step() { echo "=== $* ($(date +%T))"; }

export SCIPION_HOME="$PREFIX/home" SCIPION_USER_DATA="$PREFIX/userdata" SCIPION_NOTIFY=False
export SCIPION_LOCAL_CONFIG="$SCIPION_HOME/config/scipion.conf"   # never read ~/.config/scipion
mkdir -p "$SCIPION_HOME" "$SCIPION_USER_DATA"

step "1. Scipion venv ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import tkinter' || { echo "error: $PY has no tkinter (pwem needs it)" >&2; exit 1; }
"$VENV/bin/python" -m pip install -q scipion-pyworkflow==3.11.7 scipion-em==3.11.1 scipion-app==3.8.3 pytest
# Python 3.11: scipion/utils.py uses importlib.util without importing it
PURELIB="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import importlib.util" > "$PURELIB/scipion_importlib_fix.pth"
cat > "$VENV/bin/scipion3" <<'EOF'
#!/bin/sh
# scipion3 launcher for a pip-installed Scipion: venv first on PATH, `python -m scipion`.
BIN="$(cd "$(dirname "$0")" && pwd)"
export PATH="$BIN:$PATH"
export SCIPION_HOME="${SCIPION_HOME:-$(dirname "$BIN")/home}"
mkdir -p "$SCIPION_HOME"
exec "$BIN/python" -m scipion "$@"
EOF
chmod 755 "$VENV/bin/scipion3"
export PATH="$VENV/bin:$PATH"

step "2. scipion3 config --unattended"
if [ ! -f "$SCIPION_HOME/config/scipion.conf" ] || [ ! -f "$SCIPION_HOME/config/hosts.conf" ]; then
    scipion3 config --unattended > "$PREFIX/config.log" 2>&1 || { tail -20 "$PREFIX/config.log"; exit 1; }
fi

step "3. plugin (editable) from $REPO"
# strict editable mode: a link tree with the installed layout (deepemhancer/tests beside deepemhancer/...),
# which `scipion3 tests --grep/--run` needs to find the tests; new files need this line run again
"$VENV/bin/python" -m pip install -q -e "$REPO" --config-settings editable_mode=strict
# pip can report success while the mapped packages are unusable (legacy develop): check the entry point
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import entry_points
eps = [e for e in entry_points(group="pyworkflow.plugin") if e.name == "deepemhancer"]
assert eps, "no pyworkflow.plugin entry point 'deepemhancer'"
import deepemhancer, deepemhancer.protocols, deepemhancer.viewers  # noqa: E401
print("plugin", deepemhancer.__file__)
EOF
scipion3 inspect deepemhancer > "$PREFIX/inspect.log" 2>&1 || { cat "$PREFIX/inspect.log"; exit 1; }

if [ "$WITH_ENGINE" = 1 ]; then
    step "4. managed engine environment: scipion3 installb deepemhancer"
    if [ "$REINSTALL" = 1 ]; then
        OLD_HOME="$("$VENV/bin/python" -c 'from deepemhancer import Plugin; print(Plugin.getHome())')"
        case "$OLD_HOME" in "$SCIPION_HOME"/software/em/deepemhancer-*) rm -rf "$OLD_HOME" ;; esac
    fi
    scipion3 installb deepemhancer 2>&1 | tee "$PREFIX/installb.log" | tail -5
    # installb exits 0 on an unknown target and its rc is lost in the pipe: check the flag file
    FLAG="$("$VENV/bin/python" -c 'from deepemhancer import Plugin; print(Plugin.getInstalledFlagPath())')"
    [ -f "$FLAG" ] || { echo "error: engine environment not installed ($FLAG missing), see $PREFIX/installb.log" >&2; exit 1; }
    "$VENV/bin/python" -c 'from deepemhancer import Plugin; print("engine:", Plugin.getProgram())'
fi

step "done; export these before running the tests"
cat <<EOF
export PATH="$VENV/bin:\$PATH"
export SCIPION_HOME="$SCIPION_HOME"
export SCIPION_USER_DATA="$SCIPION_USER_DATA"
export SCIPION_LOCAL_CONFIG="$SCIPION_LOCAL_CONFIG"
export SCIPION_NOTIFY=False
EOF
