"""Scipion 3 plugin of the PyTorch DeepEMhancer (import package ``deepemhancer``).

The plugin never imports torch nor ``deepemhancer_engine``: the engine runs through its CLI
(``deepemhancer``) inside a managed environment that ``scipion3 installb deepemhancer`` creates under
``$EM_ROOT/deepemhancer-<version>`` (a venv, or a conda env when Scipion's conda is configured), so the
engine's interpreter imports only its own numpy/torch, never Scipion's pinned ones.
"""

import os
import re
import shlex
import shutil
import sys

import pwem
import pyworkflow as pw
import pyworkflow.utils as pwutils

from .constants import (
    BACKENDS,
    DEEPEMHANCER_COOT,
    DEEPEMHANCER_ENGINE_SOURCE,
    DEEPEMHANCER_ENV_ACTIVATION,
    DEEPEMHANCER_ENV_BACKEND,
    DEEPEMHANCER_HOME,
    DEEPEMHANCER_TORCH,
    DEEPEMHANCER_TORCH_PIP_OPTIONS,
    DEEPEMHANCER_WEIGHTS_DIR,
    DEFAULT_TORCH,
    DISTRIBUTION,
    ENGINE_COMMAND,
    ENGINE_DISTRIBUTION,
    ENGINE_PROJECT_DIR,
    ENV_NAME,
    PYTHON_VERSION_CONDA,
)

_PLUGIN_DIR = os.path.dirname(os.path.realpath(__file__))  # the checkout, also through a strict editable install
#: Written by the install commands once the engine answers ``deepemhancer info``; holds the backend.
INSTALLED_FLAG = "ENGINE_INSTALLED"


def _engineVersion():
    """Version of the engine this plugin was released with, read without importing anything."""
    candidates = [os.path.join(os.path.dirname(_PLUGIN_DIR), "deepemhancer_engine", "version.py")]
    try:
        import importlib.util

        spec = importlib.util.find_spec("deepemhancer_engine")  # locates, does not import
        if spec is not None and spec.submodule_search_locations:
            candidates += [os.path.join(p, "version.py") for p in spec.submodule_search_locations]
    except (ImportError, ValueError):
        pass
    for path in candidates:
        if os.path.exists(path):
            with open(path) as f:
                match = re.search(r'__version__\s*=\s*["\']([^"\']+)', f.read())
            if match:
                return match.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0.0.0"


__version__ = _engineVersion()
ENGINE_VERSION = __version__
_logo = "deepemhancer_logo.png"  # beside this file (package data); the form's header shows it
#: Scipion's development tag for the protocols (``_devStatus``): pyworkflow has no alpha tag, BETA is the
#: closest to the distributions' "Development Status :: 3 - Alpha" classifier.
DEV_STATUS = pw.BETA
_references = ["SanchezGarcia2021"]


class Plugin(pwem.Plugin):
    _homeVar = DEEPEMHANCER_HOME
    _pathVars = [DEEPEMHANCER_HOME]
    _supportedVersions = [ENGINE_VERSION]
    # No public address yet: empty, so Scipion shows no link rather than the TensorFlow original's;
    # the documentation is the package's own README (its PyPI description).
    _url = ""

    @classmethod
    def _defineVariables(cls):
        cls._defineEmVar(DEEPEMHANCER_HOME, "%s-%s" % (ENV_NAME, ENGINE_VERSION),
                         description="Folder of the managed DeepEMhancer engine environment "
                                     "(created by 'scipion3 installb deepemhancer').")
        cls._defineVar(DEEPEMHANCER_ENV_ACTIVATION, "",
                       description="Command activating an engine environment of your own, e.g. "
                                   "'conda activate myenv' (it must provide the 'deepemhancer' command). "
                                   "Empty: use the managed environment.")
        cls._defineVar(DEEPEMHANCER_WEIGHTS_DIR, "",
                       description="Folder with the model weights (.pt + model card .json). "
                                   "Empty: the weights shipped inside the engine package.")
        cls._defineVar(DEEPEMHANCER_TORCH, DEFAULT_TORCH,
                       description="pip requirement for torch in the managed environment "
                                   "(the CPU or CUDA build is chosen by pip and the options below).")
        cls._defineVar(DEEPEMHANCER_TORCH_PIP_OPTIONS, "",
                       description="Extra pip options for torch, e.g. "
                                   "'--index-url https://download.pytorch.org/whl/cu126'.")
        cls._defineVar(DEEPEMHANCER_ENGINE_SOURCE, "",
                       description="pip requirement of the engine (a wheel, a folder, a version); empty: "
                                   "this checkout's packaging/engine in a devel install, else the released "
                                   "%s of this version." % ENGINE_DISTRIBUTION)
        cls._defineVar(DEEPEMHANCER_ENV_BACKEND, "auto",
                       description="auto (conda when Scipion's conda is configured or on PATH, else venv), "
                                   "venv or conda.")
        cls._defineVar(DEEPEMHANCER_COOT, "",
                       description="Coot executable; empty: CCP4's coot (scipion-em-ccp4) or coot on PATH.")

    @classmethod
    def getVar(cls, varName, defaultValue=None):
        # Scipion defines the variables when it registers the plugin; a plain
        # `from deepemhancer import Plugin` (scripts, CI checks) has not done so yet.
        if DEEPEMHANCER_HOME not in cls._vars:
            cls._defineVariables()
        return super().getVar(varName, defaultValue)

    # ---------------------------------------------------------------- managed environment
    @classmethod
    def getBackend(cls):
        """'venv' or 'conda': what the installed env uses, else what the configuration asks for."""
        flag = cls.getInstalledFlagPath()
        if os.path.exists(flag):
            with open(flag) as f:
                written = f.read().strip()
            if written in ("venv", "conda"):
                return written
        backend = (cls.getVar(DEEPEMHANCER_ENV_BACKEND) or "auto").strip().lower()
        if backend not in BACKENDS:
            raise ValueError("%s must be one of %s, got %r" % (DEEPEMHANCER_ENV_BACKEND, BACKENDS, backend))
        if backend == "auto":
            return "conda" if (pw.Config.CONDA_ACTIVATION_CMD or shutil.which("conda")) else "venv"
        return backend

    @classmethod
    def getEnvName(cls):
        """Name of the managed env (conda env name; also the folder name under EM_ROOT)."""
        return "%s-%s" % (ENV_NAME, ENGINE_VERSION)

    @classmethod
    def getInstalledFlagPath(cls):
        return cls.getHome(INSTALLED_FLAG)

    @classmethod
    def getEngineSource(cls):
        """pip requirement that installs the engine distribution (with its weights) in the managed env:
        DEEPEMHANCER_ENGINE_SOURCE, else this checkout's engine project (editable plugin install, the
        repository beside it), else the released engine of this version from the index."""
        source = cls.getVar(DEEPEMHANCER_ENGINE_SOURCE)
        if source:
            return source
        project = os.path.join(os.path.dirname(_PLUGIN_DIR), *ENGINE_PROJECT_DIR)
        if os.path.isfile(os.path.join(project, "pyproject.toml")):
            return project
        return "%s==%s" % (ENGINE_DISTRIBUTION, ENGINE_VERSION)

    @classmethod
    def getTorchRequirement(cls):
        return cls.getVar(DEEPEMHANCER_TORCH) or DEFAULT_TORCH

    @classmethod
    def _pipInstallLine(cls, python):
        """pip commands shared by both backends: pinned torch first, then the engine + weights."""
        torchOpts = cls.getVar(DEEPEMHANCER_TORCH_PIP_OPTIONS) or ""
        return ("{py} -m pip install {opts}{torch} && {py} -m pip install {src}"
                .format(py=python, opts=(torchOpts + " ") if torchOpts else "",
                        torch=shlex.quote(cls.getTorchRequirement()),
                        src=shlex.quote(cls.getEngineSource())))

    @classmethod
    def getVenvInstallCommands(cls, python=None):
        """installb commands (cwd = the env home) for the venv backend: [(command, targets)]."""
        python = python or sys.executable
        check = "env -u PYTHONPATH venv/bin/%s info > engine_info.txt" % ENGINE_COMMAND
        return [
            ("%s -m venv venv" % shlex.quote(python), ["venv/bin/python"]),
            ("%s && %s && echo venv > %s" % (cls._pipInstallLine("venv/bin/python"), check, INSTALLED_FLAG),
             [INSTALLED_FLAG]),
        ]

    @classmethod
    def getCondaInstallCommand(cls, activation=None):
        """The one installb command line of the conda backend (cwd = the env home)."""
        activation = cls.getCondaActivationCmd() if activation is None else activation
        name = cls.getEnvName()
        return ("{act} conda create -y -n {name} python={pyv} && conda activate {name} && {pip} && "
                "env -u PYTHONPATH {exe} info > engine_info.txt && echo conda > {flag}"
                .format(act=activation, name=name, pyv=PYTHON_VERSION_CONDA,
                        pip=cls._pipInstallLine("python"), exe=ENGINE_COMMAND, flag=INSTALLED_FLAG)).strip()

    @classmethod
    def defineBinaries(cls, env):
        from scipion.install.funcs import VOID_TGZ

        if cls.getBackend() == "conda":
            commands = [(cls.getCondaInstallCommand(), [INSTALLED_FLAG])]
        else:
            commands = cls.getVenvInstallCommands()
        # VOID_TGZ + file:/dev/null: nothing to download or unpack (works offline)
        env.addPackage(ENV_NAME, version=ENGINE_VERSION, tar=VOID_TGZ, url="file:" + os.devnull,
                       commands=commands, default=True)

    # ---------------------------------------------------------------- running the engine
    @classmethod
    def getActivation(cls):
        """Shell prefix activating the engine env ('' for the venv backend: absolute path used)."""
        custom = cls.getVar(DEEPEMHANCER_ENV_ACTIVATION)
        if custom:
            return "%s && " % custom.strip().rstrip("&").strip()
        if cls.getBackend() == "conda":
            return "%s conda activate %s && " % (cls.getCondaActivationCmd(), cls.getEnvName())
        return ""

    @classmethod
    def getProgram(cls, subcommand=""):
        """Command line prefix running the engine CLI (optionally a subcommand: info, evaluate)."""
        activation = cls.getActivation()
        exe = ENGINE_COMMAND if activation else cls.getHome("venv", "bin", ENGINE_COMMAND)
        program = (activation + exe).strip()
        return ("%s %s" % (program, subcommand)).strip()

    @classmethod
    def getPython(cls):
        """Command line prefix running the engine environment's python (tests, diagnostics)."""
        activation = cls.getActivation()
        return activation + "python" if activation else cls.getHome("venv", "bin", "python")

    @classmethod
    def getEnviron(cls, tmpDir=None):
        """Environment for the engine: no Scipion PYTHONPATH, no user site, optional weights dir."""
        environ = pwutils.Environ(os.environ)
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            environ.pop(var, None)
        environ["PYTHONNOUSERSITE"] = "1"
        if not cls.getActivation():
            environ.update({"PATH": cls.getHome("venv", "bin")}, position=pwutils.Environ.BEGIN)
        weights = cls.getVar(DEEPEMHANCER_WEIGHTS_DIR)
        if weights:
            environ[DEEPEMHANCER_WEIGHTS_DIR] = weights
        if tmpDir:
            environ["TMPDIR"] = os.path.abspath(tmpDir)
        return environ

    @classmethod
    def validateInstallation(cls):
        if cls.getVar(DEEPEMHANCER_ENV_ACTIVATION):
            return []  # user-managed environment: trust it
        if os.path.exists(cls.getInstalledFlagPath()):
            return []
        return ["The DeepEMhancer engine environment is not installed (%s is missing). "
                "Run: scipion3 installb %s   (or set %s to activate an environment of your own)."
                % (cls.getInstalledFlagPath(), ENV_NAME, DEEPEMHANCER_ENV_ACTIVATION)]

    # ---------------------------------------------------------------- viewers
    @classmethod
    def getCootProgram(cls):
        """Coot executable or None: DEEPEMHANCER_COOT, CCP4's coot (scipion-em-ccp4), coot on PATH."""
        configured = cls.getVar(DEEPEMHANCER_COOT)
        if configured:
            return configured
        try:
            from ccp4 import Plugin as Ccp4Plugin  # optional plugin, never a dependency

            coot = Ccp4Plugin.getProgram("coot")
            if coot and os.path.exists(coot.split()[0]):
                return coot
        except Exception:  # noqa: BLE001 - any failure of the optional plugin means "not configured"
            pass
        return shutil.which("coot")
