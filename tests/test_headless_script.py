"""The README's headless example (deepemhancer/scripts/run_headless_example.py), run as a user would."""

import os
import subprocess
import sys

from deepemhancer.tests.common import makeTestWeights
from pyworkflow.tests import BaseTest, setupTestProject


class TestHeadlessScript(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)  # only for a scratch folder; the script makes its own project

    def test_headless_example(self):
        weights = makeTestWeights()
        env = dict(os.environ, SCIPION_DOMAIN="pwem", DEEPEMHANCER_CACHE=os.path.join(weights, "null-cache"))
        res = subprocess.run([sys.executable, "-m", "deepemhancer.scripts.run_headless_example",
                              "--project", "DeepEMhancerHeadlessTest", "--weights-dir", weights],
                             capture_output=True, text=True, timeout=600, env=env)
        self.assertEqual(res.returncode, 0, res.stdout[-3000:] + res.stderr[-3000:])
        out = res.stdout
        self.assertIn("dimensions: (32, 32, 32) (input (32, 32, 32))", out)
        self.assertIn("sampling: 1.3000 A/px (input 1.3000)", out)
        outFile = [ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("output: ")][0]
        cxc = [ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("ChimeraX script: ")][0]
        with open(cxc) as f:
            self.assertIn('open "%s" format mrc' % outFile, f.read())
