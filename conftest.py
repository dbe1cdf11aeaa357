"""Root conftest: Scipion defaults for plain ``pytest tests`` (the Scipion tests of the plugin).

Does nothing when Scipion is not installed, so ``pytest deepemhancer_engine`` in the engine-only
environment is unaffected. It must live outside the package: pyworkflow reads these variables once,
at import time, and importing ``deepemhancer`` imports pyworkflow.
"""

import importlib.util
import os
import shutil
import sys

if importlib.util.find_spec("scipion") is not None and importlib.util.find_spec("pyworkflow") is not None:
    _here = os.path.dirname(os.path.abspath(__file__))
    os.environ.setdefault("SCIPION_HOME", os.path.join(_here, ".scipion-home"))
    os.makedirs(os.environ["SCIPION_HOME"], exist_ok=True)
    os.environ.setdefault("SCIPION_USER_DATA", os.path.join(os.environ["SCIPION_HOME"], "userdata"))
    os.environ.setdefault("SCIPION_DOMAIN", "pwem")  # the launcher sets it; pytest does not
    os.environ.setdefault("SCIPION_NOTIFY", "False")
    # protocols run as `$SCIPION_PYTHON pw_protocol_run.py` (default: python3 on PATH)
    os.environ.setdefault("SCIPION_PYTHON", sys.executable)
    os.environ.pop("DISPLAY", None)  # viewers must never open a window in tests
    _hosts = os.path.join(os.environ["SCIPION_HOME"], "config", "hosts.conf")
    if "SCIPION_HOSTS" not in os.environ and not os.path.exists(_hosts):
        _tpl = os.path.join(os.path.dirname(importlib.util.find_spec("scipion").origin),
                            "templates", "hosts.template")
        os.makedirs(os.path.dirname(_hosts), exist_ok=True)
        shutil.copy(_tpl, _hosts)
else:
    collect_ignore = ["tests"]  # the Scipion tests need Scipion; the engine's tests do not
