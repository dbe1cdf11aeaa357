"""The engine never imports Scipion; importing the package alone stays cheap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["cli", "config", "errors", "io", "normalize", "resample", "tiling", "model", "weights",
           "inference", "postprocess", "pipeline", "evaluate", "commands.enhance", "commands.evaluate",
           "commands.info", "commands.nullresponse", "commands.simulate", "commands.train"]


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_engine_modules_do_not_import_scipion():
    imports = "; ".join(f"import deepemhancer_engine.{m}" for m in MODULES)
    out = _run(f"import sys; {imports}; print(sorted(m for m in sys.modules "
               "if m.split('.')[0] in ('pwem', 'pyworkflow', 'deepemhancer')))")
    assert out.strip() == "[]"


def test_package_import_is_light():
    out = _run("import sys, deepemhancer_engine; print('torch' in sys.modules, 'pwem' in sys.modules)")
    assert out.split() == ["False", "False"]
