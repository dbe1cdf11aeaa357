"""The installed plugin distribution: what Scipion and its plugin manager read from it."""

import os
import unittest
from importlib.metadata import distribution

import pyworkflow as pw
from deepemhancer import Plugin
from deepemhancer import constants as C
from deepemhancer.protocols import ProtDeepEMhancer


class TestPluginDistribution(unittest.TestCase):
    def test_logo_found_by_pyworkflow(self):
        pw.Config.getDomain().getProtocols()  # registers each protocol with its plugin, as the GUI does
        path = ProtDeepEMhancer.getPluginLogoPath()  # what the protocol form's header shows
        self.assertTrue(path and os.path.isfile(path), path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_metadata(self):
        meta = distribution(C.DISTRIBUTION).metadata
        self.assertEqual(meta["Requires-Python"], ">=3.8")  # Scipion's installer defaults to Python 3.8
        self.assertEqual(distribution(C.DISTRIBUTION).requires, ["scipion-em"])  # never torch or the engine
        self.assertIn("Development Status :: 3 - Alpha", meta.get_all("Classifier"))
        self.assertTrue(meta["Keywords"])
        self.assertNotIn("rsanchezgarc", Plugin.getUrl())  # not the TensorFlow original

    def test_protocol_dev_status(self):
        """The protocol carries the plugin's development tag (pyworkflow's BETA: it has no alpha)."""
        self.assertEqual(ProtDeepEMhancer._devStatus, pw.BETA)
