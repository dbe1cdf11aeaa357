"""Plugin configuration: install command lines (venv and conda, as strings), program, environment,
and the import-isolation rule (importing the plugin pulls in neither torch nor the engine)."""

import os
import subprocess
import sys
import unittest

from deepemhancer import ENGINE_VERSION, INSTALLED_FLAG, Plugin
from deepemhancer import constants as C


class _VarsOverride:
    """Temporarily override plugin variables (Plugin._vars is what getVar reads)."""

    def __init__(self, **values):
        self.values, self.saved = values, {}

    def __enter__(self):
        Plugin.getVar(C.DEEPEMHANCER_HOME)  # define the variables first, then override
        for k, v in self.values.items():
            self.saved[k] = Plugin._vars.get(k)
            Plugin._vars[k] = v

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            Plugin._vars[k] = v


class TestDeepEMhancerPlugin(unittest.TestCase):
    def test_conda_command_line(self):
        with _VarsOverride(DEEPEMHANCER_TORCH="torch==2.13.0", DEEPEMHANCER_TORCH_PIP_OPTIONS="",
                           DEEPEMHANCER_ENGINE_SOURCE="/src/dist/deepemhancer_engine-0.1.0-py3-none-any.whl"):
            cmd = Plugin.getCondaInstallCommand(activation='eval "$(/opt/conda/bin/conda shell.bash hook)"&&')
        env = "deepemhancer-%s" % ENGINE_VERSION
        self.assertEqual(
            cmd,
            'eval "$(/opt/conda/bin/conda shell.bash hook)"&& conda create -y -n %s python=3.11 && '
            "conda activate %s && python -m pip install torch==2.13.0 && "
            "python -m pip install /src/dist/deepemhancer_engine-0.1.0-py3-none-any.whl && "
            "env -u PYTHONPATH deepemhancer info > engine_info.txt && echo conda > %s" % (env, env, INSTALLED_FLAG))

    def test_torch_choice_is_configurable(self):
        with _VarsOverride(DEEPEMHANCER_TORCH="torch==2.7.1+cu126",
                           DEEPEMHANCER_TORCH_PIP_OPTIONS="--index-url https://download.pytorch.org/whl/cu126"):
            cmd = Plugin.getCondaInstallCommand(activation="")
        self.assertIn("python -m pip install --index-url https://download.pytorch.org/whl/cu126 "
                      "torch==2.7.1+cu126 && ", cmd)

    def test_venv_commands(self):
        cmds = Plugin.getVenvInstallCommands(python="/usr/bin/python3.11")
        self.assertEqual(cmds[0], ("/usr/bin/python3.11 -m venv venv", ["venv/bin/python"]))
        line, targets = cmds[1]
        self.assertEqual(targets, [INSTALLED_FLAG])
        self.assertTrue(line.startswith("venv/bin/python -m pip install torch==2.13.0 && "
                                        "venv/bin/python -m pip install "), line)
        self.assertTrue(line.endswith("venv/bin/deepemhancer info > engine_info.txt && echo venv > %s"
                                      % INSTALLED_FLAG), line)

    def test_defineBinaries_target(self):
        class FakeEnv:
            def addPackage(self, name, **kw):
                self.name, self.kw = name, kw
        env = FakeEnv()
        with _VarsOverride(DEEPEMHANCER_ENV_BACKEND="venv"):
            Plugin.defineBinaries(env)
        self.assertEqual(env.name, C.ENV_NAME)  # `scipion3 installb deepemhancer`
        self.assertEqual(env.kw["version"], ENGINE_VERSION)
        self.assertEqual(env.kw["url"], "file:" + os.devnull)  # nothing downloaded
        self.assertTrue(env.kw["default"])

    def test_engine_source(self):
        """Editable plugin install: the checkout's engine project; from a wheel: the released engine."""
        repo = os.path.dirname(os.path.dirname(os.path.realpath(sys.modules["deepemhancer"].__file__)))
        with _VarsOverride(DEEPEMHANCER_ENGINE_SOURCE=""):
            src = Plugin.getEngineSource()
        engine_project = os.path.join(repo, "packaging", "engine")
        if os.path.isfile(os.path.join(engine_project, "pyproject.toml")):
            self.assertEqual(src, engine_project)
        else:
            self.assertEqual(src, "deepemhancer-engine==%s" % ENGINE_VERSION)
        with _VarsOverride(DEEPEMHANCER_ENGINE_SOURCE="/dist/deepemhancer_engine-1-py3-none-any.whl"):
            self.assertEqual(Plugin.getEngineSource(), "/dist/deepemhancer_engine-1-py3-none-any.whl")

    def test_venv_torch_choice(self):
        with _VarsOverride(DEEPEMHANCER_TORCH="torch==2.13.0",
                           DEEPEMHANCER_TORCH_PIP_OPTIONS="--index-url https://download.pytorch.org/whl/cpu",
                           DEEPEMHANCER_ENGINE_SOURCE="deepemhancer-engine==0.1.0"):
            line = Plugin.getVenvInstallCommands(python="python3")[1][0]
        self.assertTrue(line.startswith("venv/bin/python -m pip install --index-url "
                                        "https://download.pytorch.org/whl/cpu torch==2.13.0 && "
                                        "venv/bin/python -m pip install deepemhancer-engine==0.1.0 && "), line)

    def test_program_and_environ(self):
        with _VarsOverride(DEEPEMHANCER_ENV_ACTIVATION="", DEEPEMHANCER_ENV_BACKEND="venv",
                           DEEPEMHANCER_WEIGHTS_DIR="/weights/here"):
            if Plugin.getBackend() == "venv":
                self.assertEqual(Plugin.getProgram(), Plugin.getHome("venv", "bin", "deepemhancer"))
            os.environ["PYTHONPATH"] = "/scipion/site-packages"
            try:
                env = Plugin.getEnviron(tmpDir="/proj/Runs/000007_ProtDeepEMhancer/tmp")
            finally:
                del os.environ["PYTHONPATH"]
        self.assertNotIn("PYTHONPATH", env)  # never Scipion's numpy in the engine env
        self.assertEqual(env["PYTHONNOUSERSITE"], "1")
        self.assertEqual(env["DEEPEMHANCER_WEIGHTS_DIR"], "/weights/here")
        self.assertEqual(env["TMPDIR"], "/proj/Runs/000007_ProtDeepEMhancer/tmp")

    def test_custom_activation(self):
        with _VarsOverride(DEEPEMHANCER_ENV_ACTIVATION="conda activate mine"):
            self.assertEqual(Plugin.getProgram(), "conda activate mine && deepemhancer")
            self.assertEqual(Plugin.getProgram("info"), "conda activate mine && deepemhancer info")
            self.assertEqual(Plugin.validateInstallation(), [])

    def test_missing_installation_message(self):
        with _VarsOverride(DEEPEMHANCER_ENV_ACTIVATION="", DEEPEMHANCER_HOME="/nonexistent/deepemhancer-x"):
            errors = Plugin.validateInstallation()
        self.assertEqual(len(errors), 1)
        self.assertIn("scipion3 installb deepemhancer", errors[0])

    def test_import_pulls_in_neither_torch_nor_engine(self):
        code = ("import sys\n"
                "import deepemhancer, deepemhancer.constants, deepemhancer.bibtex\n"
                "import deepemhancer.protocols, deepemhancer.viewers\n"
                "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'deepemhancer_engine'))\n"
                "assert not bad, bad\n"
                "print('isolated')\n")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        self.assertEqual(res.returncode, 0, res.stderr[-2000:])
        self.assertIn("isolated", res.stdout)

    def test_managed_env_is_isolated(self):
        """The engine's interpreter imports its own numpy, not Scipion's pinned one."""
        if Plugin.validateInstallation():
            self.fail("engine environment not installed: run scipion3 installb deepemhancer")
        code = "import numpy, sys; print(numpy.__version__); print(numpy.__file__)"
        res = subprocess.run('%s -c "%s"' % (Plugin.getPython(), code), shell=True, capture_output=True,
                             text=True, env=Plugin.getEnviron(), timeout=600)
        self.assertEqual(res.returncode, 0, res.stderr)
        version, path = res.stdout.split()[:2]
        import numpy
        self.assertNotEqual(os.path.dirname(path), os.path.dirname(numpy.__file__))
        self.assertFalse(path.startswith(os.path.dirname(os.path.dirname(numpy.__file__))), path)

    def test_menu(self):
        """In pwem's 3D > Postprocess group (beside Xmipp, LocScale, EMReady), not a section of its own, and
        in the Model building view's Preprocess map section (beside Xmipp's DeepEMhancer)."""
        import pwem
        from pyworkflow import Config
        from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig

        conf = os.path.join(os.path.dirname(pwem.__file__), "protocols.conf")
        views = ProtocolTreeConfig.load(Config.getDomain(), conf)

        def child(menu, text):
            found = [c for c in menu.childs if c.text == text]
            self.assertEqual(len(found), 1, "%s in %s" % (text, [c.text for c in menu.childs]))
            return found[0]

        postprocess = child(child(views["Protocols SPA"], "3D"), "Postprocess")
        self.assertEqual(postprocess.tag, "protocol_group")
        self.assertIn("ProtDeepEMhancer", [c.value for c in postprocess.childs])
        self.assertNotIn("Postprocessing", [c.text for c in child(views["Protocols SPA"], "3D").childs])
        preprocess = child(views["Model building"], "Preprocess map")
        self.assertIn("ProtDeepEMhancer", [c.value for c in preprocess.childs])

    def test_scipion_finds_the_tests(self):
        """`scipion3 tests --grep deepemhancer` (the plugin's tests folder, found from the package path)."""
        res = subprocess.run([sys.executable, "-m", "scipion", "tests", "--grep", "deepemhancer"],
                             capture_output=True, text=True, timeout=600)
        self.assertEqual(res.returncode, 0, res.stderr[-2000:])
        for name in ("deepemhancer.tests.test_protocol.TestDeepEMhancerProtocol",
                     "deepemhancer.tests.test_plugin.TestDeepEMhancerPlugin",
                     "deepemhancer.tests.test_shipped_weights.TestDeepEMhancerShippedWeights"):
            self.assertIn(name, res.stdout)
