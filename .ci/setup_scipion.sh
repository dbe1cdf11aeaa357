#!/usr/bin/env bash
# Idempotent headless Scipion 3 set-up for this plugin (recipe: docs "scipion-headless").
#
#   .ci/setup_scipion.sh PREFIX [--no-engine | --reinstall-engine] [--wheels DIST_DIR]
#
# Creates (or reuses) under PREFIX:
#   PREFIX/venv       Scipion's Python env: scipion-pyworkflow/-em/-app pinned from PyPI, pytest,
#                     the py3.11 importlib fix (.pth), a `scipion3` wrapper, and the plugin: this repo
#                     installed editable (devel), or with --wheels the scipion-em-deepemhancer wheel
#                     from DIST_DIR (what a user gets), whose installb then installs the engine from
#                     DIST_DIR's deepemhancer-engine wheel (DEEPEMHANCER_ENGINE_SOURCE)
#   PREFIX/home       SCIPION_HOME (config/scipion.conf + hosts.conf, software/em/ = managed envs)
#   PREFIX/userdata   SCIPION_USER_DATA (test projects)
# then runs `scipion3 installb deepemhancer` (the engine's managed env: venv, or conda when configured;
# skipped with --no-engine; --reinstall-engine removes it first, e.g. after engine changes without a
# version bump, since installb skips a target whose files exist) and prints the variables to export.
# It can be sourced (.ci/run does): the exports then stay in the caller's shell.
#
# Variables honoured: PYTHON (interpreter for the Scipion venv, default python3.11 or python3),
# DEEPEMHANCER_TORCH (pip requirement for torch in the managed env, default torch==2.13.0),
# DEEPEMHANCER_TORCH_PIP_OPTIONS, DEEPEMHANCER_ENGINE_SOURCE, DEEPEMHANCER_ENV_BACKEND (auto|venv|conda),
# CONDA_ACTIVATION_CMD.
set -euo pipefail

USAGE="usage: .ci/setup_scipion.sh PREFIX [--no-engine | --reinstall-engine] [--wheels DIST_DIR]"
PREFIX="${1:?$USAGE}"
shift
WITH_ENGINE=1
REINSTALL=0
WHEELS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-engine) WITH_ENGINE=0 ;;
        --reinstall-engine) REINSTALL=1 ;;
        --wheels) WHEELS="$(cd "${2:?$USAGE}" && pwd)"; shift ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
one_wheel() {  # the single wheel of distribution $1 in $WHEELS
    local found=("$WHEELS"/"$1"-*-py3-none-any.whl)
    [ "${#found[@]}" = 1 ] && [ -f "${found[0]}" ] || { echo "error: need one $1 wheel in $WHEELS" >&2; exit 1; }
    echo "${found[0]}"
}
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

if [ -n "$WHEELS" ]; then
    PLUGIN_WHEEL="$(one_wheel scipion_em_deepemhancer)"
    step "3. plugin from its wheel $PLUGIN_WHEEL"
    # --force-reinstall: replaces an editable install of the same version; scipion-em is already there
    "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$PLUGIN_WHEEL"
    DEEPEMHANCER_ENGINE_SOURCE="$(one_wheel deepemhancer_engine)"
    export DEEPEMHANCER_ENGINE_SOURCE  # installb (step 4) installs the engine from this wheel
else
    step "3. plugin (editable) from $REPO"
    # strict editable mode: a link tree with the installed layout (deepemhancer/tests beside deepemhancer/...),
    # which `scipion3 tests --grep/--run` needs to find the tests; new files need this line run again
    "$VENV/bin/python" -m pip install -q -e "$REPO" --config-settings editable_mode=strict
fi
# pip can report success while the mapped packages are unusable (legacy develop): check the entry point,
# and with --wheels that the wheel is what gets imported (not this checkout). Run from PREFIX: in the
# repository, the current folder's *.egg-info (left by builds) would answer for the distribution.
(cd "$PREFIX" && DEEPEMHANCER_FROM_WHEEL="${WHEELS:+1}" "$VENV/bin/python" - <<'EOF'
import json
import os
from importlib.metadata import distribution, entry_points
eps = [e for e in entry_points(group="pyworkflow.plugin") if e.name == "deepemhancer"]
assert eps, "no pyworkflow.plugin entry point 'deepemhancer'"
import deepemhancer, deepemhancer.protocols, deepemhancer.viewers  # noqa: E401
direct = json.loads(distribution("scipion-em-deepemhancer").read_text("direct_url.json") or "{}")
editable = direct.get("dir_info", {}).get("editable", False)
if os.environ.get("DEEPEMHANCER_FROM_WHEEL"):
    assert not editable and direct.get("url", "").endswith(".whl"), direct
print("plugin", deepemhancer.__file__, "(editable)" if editable else "(from %s)" % direct.get("url", "?"))
EOF
)
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
    # which engine distribution the managed env holds, and from where (with --wheels: that wheel)
    ENGINE_ORIGIN="$("$VENV/bin/python" -c 'from deepemhancer import Plugin; print(Plugin.getPython())')"
    ENGINE_ORIGIN="$(env -u PYTHONPATH bash -c "$ENGINE_ORIGIN -c 'from importlib.metadata import distribution
e = distribution(\"deepemhancer-engine\"); print(e.version, e.read_text(\"direct_url.json\") or \"(index)\")'")"
    echo "engine distribution: $ENGINE_ORIGIN"
    if [ -n "$WHEELS" ] && [[ "$ENGINE_ORIGIN" != *"file://$DEEPEMHANCER_ENGINE_SOURCE"* ]]; then
        echo "error: the managed env's engine is not $DEEPEMHANCER_ENGINE_SOURCE" >&2; exit 1
    fi
fi

step "done; export these before running the tests"
cat <<EOF
export PATH="$VENV/bin:\$PATH"
export SCIPION_HOME="$SCIPION_HOME"
export SCIPION_USER_DATA="$SCIPION_USER_DATA"
export SCIPION_LOCAL_CONFIG="$SCIPION_LOCAL_CONFIG"
export SCIPION_NOTIFY=False
EOF
