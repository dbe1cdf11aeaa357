"""Viewers build their scripts/figures without opening any window (never .show())."""

import os

from deepemhancer import Plugin
from deepemhancer.tests.test_protocol import DeepEMhancerTestBase
from deepemhancer.viewers import DeepEMhancerChimeraViewer, DeepEMhancerCootViewer, DeepEMhancerPlotViewer
from deepemhancer.viewers.viewer_deepemhancer import (
    CXC_SCRIPT,
    FSC_PNG,
    SLICES_PNG,
    contourLevel,
    readFscTable,
    readMap,
)
from pwem import Domain
from pwem.viewers.viewer_chimera import Chimera, ChimeraView
from pyworkflow.gui.plotter import Plotter
from pyworkflow.viewer import DESKTOP_TKINTER, CommandView, MessageView


class TestDeepEMhancerViewers(DeepEMhancerTestBase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        imp1 = cls.importVolume(cls.half1, label="half1")
        imp2 = cls.importVolume(cls.half2, label="half2")
        cls.prot = cls.newDeepEMhancer(useHalfMaps=True, inputHalf1=imp1.outputVolume,
                                       inputHalf2=imp2.outputVolume)
        cls.launchProtocol(cls.prot)

    def _fakeProgram(self, name):
        path = os.path.join(self.proj.path, "fakebin", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)
        return path

    def test_registered(self):
        viewers = Domain.findViewers(self.prot, DESKTOP_TKINTER)
        for v in (DeepEMhancerChimeraViewer, DeepEMhancerCootViewer, DeepEMhancerPlotViewer):
            self.assertIn(v, viewers)

    def test_chimerax_script(self):
        viewer = DeepEMhancerChimeraViewer(project=self.proj, protocol=self.prot)
        cxc = viewer.writeScript(self.prot)
        self.assertEqual(cxc, os.path.abspath(self.prot._getExtraPath(CXC_SCRIPT)))
        with open(cxc) as f:
            script = f.read()
        self.assertIn('open "%s" format mrc' % self.prot.getOutputPath(), script)
        self.assertIn('open "%s" format mrc' % self.prot._engineInputPaths()[0], script)
        self.assertIn('open "%s" format mrc' % self.prot.getConfidencePath(), script)
        self.assertEqual(script.count("\nopen "), 3)
        self.assertIn("voxelSize 1.300000", script)
        x, y, z = self.prot.outputVolume.getShiftsFromOrigin()
        self.assertIn("origin %0.2f,%0.2f,%0.2f" % (x, y, z), script)
        self.assertIn("\ntile #1,2\n", script)  # side by side (the confidence map stays hidden)
        # the enhanced surface coloured by confidence, with a key naming the values
        self.assertIn("\nvolume #3 hide\n", script)
        self.assertIn("\ncolor sample #2 map #3 palette 0,#d7191c:0.25,#fdae61:0.5,#ffffbf:0.75,#a6d96a:1,#1a9641\n",
                      script)
        self.assertIn("\nkey #d7191c:0 #fdae61:0.25 #ffffbf:0.5 #a6d96a:0.75 #1a9641:1 ", script)
        self.assertIn('2dlabels text "confidence"', script)
        level = contourLevel(readMap(self.prot.getOutputPath()))
        self.assertIn("level %g" % level, script)

    def test_chimerax_not_configured_then_configured(self):
        saved = Chimera._program
        try:
            Chimera._program = "/nonexistent/chimerax/bin/ChimeraX"
            views = DeepEMhancerChimeraViewer(project=self.proj, protocol=self.prot)._visualize(self.prot)
            self.assertIsInstance(views[0], MessageView)
            self.assertIn(CXC_SCRIPT, views[0].getMessage())
            Chimera._program = self._fakeProgram("ChimeraX")
            views = DeepEMhancerChimeraViewer(project=self.proj, protocol=self.prot)._visualize(self.prot)
            self.assertIsInstance(views[0], ChimeraView)
            self.assertIn(Chimera._program, views[0]._cmd)
            self.assertIn(os.path.abspath(self.prot._getExtraPath(CXC_SCRIPT)), views[0]._cmd)
        finally:
            Chimera._program = saved

    def test_coot(self):
        from deepemhancer.tests.test_plugin import _VarsOverride
        with _VarsOverride(DEEPEMHANCER_COOT=self._fakeProgram("coot")):
            views = DeepEMhancerCootViewer(project=self.proj, protocol=self.prot)._visualize(self.prot)
            self.assertIsInstance(views[0], CommandView)
            cmd = views[0]._cmd
            self.assertIn(Plugin.getCootProgram(), cmd)
            self.assertIn("--script", cmd)
        script = self.prot._getExtraPath("deepemhancer_coot.py")
        with open(script) as f:
            text = f.read()
        self.assertIn("handle_read_ccp4_map(%r, 0)" % self.prot.getOutputPath(), text)
        self.assertEqual(text.count("set_contour_level_absolute"), 2)
        with _VarsOverride(DEEPEMHANCER_COOT="", DEEPEMHANCER_HOME=Plugin.getHome()):
            os_path = os.environ.get("PATH", "")
            os.environ["PATH"] = "/nonexistent"
            try:
                if Plugin.getCootProgram() is None:
                    views = DeepEMhancerCootViewer(project=self.proj, protocol=self.prot)._visualize(self.prot)
                    self.assertIsInstance(views[0], MessageView)
            finally:
                os.environ["PATH"] = os_path

    def test_slices_and_fsc_figures(self):
        """Slices; the FSC figure shows the run's own half-map curve (written by the engine, stored in the
        run) with the resolution limit, and any evaluate table in the extra folder beside it."""
        viewer = DeepEMhancerPlotViewer(project=self.proj, protocol=self.prot)
        fsc = self.prot._getExtraPath("evaluate", "fsc.tsv")
        if os.path.exists(fsc):
            os.remove(fsc)
        views = viewer._visualize(self.prot)
        self.assertEqual(len(views), 2)
        self.assertIsInstance(views[0], Plotter)
        axes = views[0].getFigure().axes
        self.assertEqual(len(axes), 12)  # 3 maps (input, enhanced, confidence) x 3 slices + 3 colour bars
        confidence = [ax for ax in axes if ax.get_title().startswith("confidence: ")]
        self.assertEqual(len(confidence), 3)
        image = confidence[0].get_images()[0]
        self.assertEqual(image.get_cmap().name, "RdYlGn")
        self.assertEqual(image.get_clim(), (0.0, 1.0))
        self.assertTrue(os.path.getsize(self.prot._getExtraPath(SLICES_PNG)) > 1000)
        limit = self.prot.resolutionLimitUsed.get()
        lines = {ln.get_label(): ln for ln in views[1].getFigure().axes[0].get_lines()}
        own = "half maps (this run): FSC-0.143 %.2f A" % self.prot.halfMapFsc0143.get()
        self.assertEqual(sorted(lines), sorted([own, "resolution limit %.2f A" % limit, "0.143"]))
        _, x, curves = readFscTable(self.prot.fscCurveFile.get())
        self.assertEqual(list(curves), ["raw_halves"])  # evaluate's column name for the same curve
        self.assertTrue((lines[own].get_xdata() == x).all())
        self.assertAlmostEqual(lines["resolution limit %.2f A" % limit].get_xdata()[0], 1.0 / limit)
        os.makedirs(os.path.dirname(fsc), exist_ok=True)
        with open(fsc, "w") as f:
            f.write("# written by deepemhancer evaluate\nfrequency\tresolution\tfsc_input\tfsc_enhanced\n")
            for i in range(1, 17):
                f.write("%g\t%g\t%g\t%g\n" % (i / 41.6, 41.6 / i, 1 - i / 16, 1 - i / 20))
        views = viewer._visualize(self.prot)
        self.assertEqual(len(views), 2)
        ax = views[1].getFigure().axes[0]
        labels = [ln.get_label() for ln in ax.get_lines()]
        self.assertIn("fsc.tsv: fsc_enhanced", labels)
        self.assertIn(own, labels)
        self.assertNotIn("fsc.tsv: resolution", labels)
        self.assertTrue(os.path.exists(self.prot._getExtraPath(FSC_PNG)))
