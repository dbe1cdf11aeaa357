"""Viewers of ProtDeepEMhancer: ChimeraX (.cxc script), Coot (python script) and matplotlib figures
(central orthogonal slices; FSC curves: the half-map FSC the engine writes with every run, and any
``evaluate`` output in the extra folder) that need nothing installed.

Each viewer writes its script/figure into the protocol's extra folder and returns views; ``_visualize``
never opens a window, so tests call it directly.
"""

import glob
import os

import numpy as np
import pyworkflow.viewer as pwviewer
from deepemhancer import Plugin
from deepemhancer.protocols import ProtDeepEMhancer
from deepemhancer.protocols.protocol_deepemhancer import stripFormat
from pwem.viewers.viewer_chimera import Chimera, ChimeraView

CXC_SCRIPT = "deepemhancer_chimerax.cxc"
COOT_SCRIPT = "deepemhancer_coot.py"
SLICES_PNG = "deepemhancer_slices.png"
FSC_PNG = "deepemhancer_fsc.png"
#: FSC tables in the extra folder: the run's half-map FSC (OUTPUT_FSC, written by the engine beside the map),
#: ``deepemhancer evaluate --outdir extra/evaluate``'s ``fsc_curves.tsv`` (its ``metrics.tsv`` holds one
#: number per row, no curves, so it is not matched), and any other *fsc*.tsv.
EVALUATE_GLOBS = ("evaluate/*fsc*.tsv", "*fsc*.tsv")
#: The first two columns of evaluate's fsc_curves.tsv (spatial frequency in 1/A, resolution in A); every
#: other column is one FSC curve. The engine's names: ``deepemhancer_engine.evaluate.CURVE_AXIS_COLUMNS``.
FREQ_COLUMN, RESOLUTION_COLUMN = "freq_1_per_A", "resolution_A"
INPUT_COLOR, OUTPUT_COLOR = "#b4b4b4", "#f0b428"
#: Confidence colours (0 -> 1): red, orange, yellow, light green, green (ColorBrewer RdYlGn), and the values
#: the key names.
CONFIDENCE_PALETTE = ((0.0, "#d7191c"), (0.25, "#fdae61"), (0.5, "#ffffbf"), (0.75, "#a6d96a"), (1.0, "#1a9641"))
CONFIDENCE_CMAP = "RdYlGn"


def readMap(path):
    """(Z, Y, X) float32 array of an MRC map (Scipion's own mrcfile, read-only)."""
    import mrcfile

    with mrcfile.open(stripFormat(path), permissive=True, mode="r") as m:
        return np.asarray(m.data, dtype=np.float32)


def contourLevel(data):
    """A surface level that separates density from noise: median + 3 robust sigma (MAD),
    kept below the maximum (maps with an empty, exactly flat background fall back to mid-range)."""
    data = np.asarray(data, dtype=np.float64)
    med = float(np.median(data))
    sigma = 1.4826 * float(np.median(np.abs(data - med)))
    top = float(data.max())
    if sigma <= 1e-6 * max(top - float(data.min()), 1e-30):
        sigma = float(data.std())
    level = med + 3.0 * sigma
    if level >= top:
        level = med + 0.5 * (top - med)
    return level


class _DeepEMhancerViewer(pwviewer.Viewer):
    _environments = [pwviewer.DESKTOP_TKINTER]
    _targets = [ProtDeepEMhancer]

    def _prot(self, obj=None):
        return obj if isinstance(obj, ProtDeepEMhancer) else self.protocol

    def _maps(self, prot):
        """[(label, absolute MRC path)] of the input shown (half-map 1 or the map) and the output."""
        inputFn = prot._engineInputPaths()[0]
        outputFn = os.path.abspath(stripFormat(prot.outputVolume.getFileName()))
        return [("input: %s" % os.path.basename(inputFn), inputFn),
                ("DeepEMhancer: %s" % os.path.basename(outputFn), outputFn)]

    def _notReady(self, prot):
        if prot is None or not prot.hasAttribute("outputVolume"):
            return [pwviewer.MessageView("DeepEMhancer has no output yet.", title="DeepEMhancer",
                                         msgType=pwviewer.MSG_WARN)]
        return None


class DeepEMhancerChimeraViewer(_DeepEMhancerViewer):
    """Input and enhanced maps side by side in ChimeraX, with levels from the data; with a confidence map,
    the enhanced surface coloured by confidence, with a colour key."""

    _label = "ChimeraX: input and enhanced maps"

    def writeScript(self, prot):
        vol = prot.outputVolume
        sampling = vol.getSamplingRate()
        x, y, z = vol.getShiftsFromOrigin()
        geometry = "voxelSize %f origin %0.2f,%0.2f,%0.2f" % (sampling, x, y, z)
        lines = ["# DeepEMhancer (Scipion): input (left) and enhanced map (right)"]
        for model, ((label, path), color) in enumerate(zip(self._maps(prot), (INPUT_COLOR, OUTPUT_COLOR)), 1):
            level = contourLevel(readMap(path))
            lines += ['open "%s" format mrc' % path,
                      "volume #%d style surface %s level %g color %s" % (model, geometry, level, color),
                      'rename #%d "%s"' % (model, label)]
        if prot.hasAttribute("outputConfidence"):
            lines += confidenceLines(os.path.abspath(stripFormat(prot.outputConfidence.getFileName())), geometry)
        lines += ["tile #1,2", "view"]
        cxc = os.path.abspath(prot._getExtraPath(CXC_SCRIPT))
        with open(cxc, "w") as f:
            f.write("\n".join(lines) + "\n")
        return cxc

    def _visualize(self, obj, **kwargs):
        prot = self._prot(obj)
        notReady = self._notReady(prot)
        if notReady:
            return notReady
        cxc = self.writeScript(prot)
        program = Chimera.getProgram()
        if program and os.path.exists(program):
            return [ChimeraView(cxc)]
        return [pwviewer.MessageView(
            "ChimeraX is not configured (no %s). The script was written to\n%s\n"
            "Open it with: ChimeraX %s" % (program, cxc, cxc),
            title="ChimeraX", msgType=pwviewer.MSG_WARN)]


def confidenceLines(path, geometry, surface=2, model=3):
    """ChimeraX commands: open the confidence map hidden, colour the enhanced surface by it, add a key."""
    palette = ":".join("%g,%s" % (v, c) for v, c in CONFIDENCE_PALETTE)
    return ["# enhanced surface coloured by confidence (0 = not reproduced by both halves, 1 = reproduced)",
            'open "%s" format mrc' % path,
            "volume #%d %s" % (model, geometry),
            'rename #%d "confidence: %s"' % (model, os.path.basename(path)),
            "volume #%d hide" % model,
            "color sample #%d map #%d palette %s" % (surface, model, palette),
            "key %s pos 0.05,0.06 size 0.4,0.03" % " ".join("%s:%g" % (c, v) for v, c in CONFIDENCE_PALETTE),
            '2dlabels text "confidence" xpos 0.05 ypos 0.1 size 16']


class DeepEMhancerCootViewer(_DeepEMhancerViewer):
    """Input and enhanced maps in Coot (CCP4's coot, DEEPEMHANCER_COOT or coot on PATH)."""

    _label = "Coot: input and enhanced maps"

    def writeScript(self, prot):
        lines = ["# DeepEMhancer (Scipion): open the input and the enhanced map in Coot"]
        for i, (_label, path) in enumerate(self._maps(prot)):
            level = contourLevel(readMap(path))
            lines += ["imol_%d = handle_read_ccp4_map(%r, 0)" % (i, path),
                      "set_contour_level_absolute(imol_%d, %r)" % (i, round(level, 6))]
        script = os.path.abspath(prot._getExtraPath(COOT_SCRIPT))
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        return script

    def getCommand(self, prot, coot):
        return '"%s" --no-state-script --script "%s" &' % (coot, self.writeScript(prot))

    def _visualize(self, obj, **kwargs):
        prot = self._prot(obj)
        notReady = self._notReady(prot)
        if notReady:
            return notReady
        coot = Plugin.getCootProgram()
        if coot:
            return [pwviewer.CommandView(self.getCommand(prot, coot), cwd=prot._getExtraPath())]
        script = self.writeScript(prot)
        return [pwviewer.MessageView(
            "Coot is not configured (set DEEPEMHANCER_COOT, install scipion-em-ccp4 with CCP4, or put coot "
            "on PATH). The script was written to\n%s\nRun: coot --script %s" % (script, script),
            title="Coot", msgType=pwviewer.MSG_WARN)]


def readFscTable(path):
    """(x label, x values in 1/A, {curve name: values}) from a TSV written by ``deepemhancer evaluate``.

    Lines starting with '#' are comments; the first other line is the header. The x column is
    FREQ_COLUMN; in other tables the one named like frequency (1/A) or resolution (A, converted to 1/A),
    else the first column. A table without numeric columns has no curves.
    """
    with open(path) as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f if ln.strip() and not ln.startswith("#")]
    header, body = rows[0], rows[1:]
    cols = {}
    for j, name in enumerate(header):
        try:
            cols[name] = np.array([float(r[j]) for r in body])
        except (ValueError, IndexError):
            continue  # non-numeric column
    names = list(cols)
    if not names:
        return None, np.array([]), {}
    xName = FREQ_COLUMN if FREQ_COLUMN in cols else next((n for n in names if "freq" in n.lower()), None)
    xName = xName or next((n for n in names if "res" in n.lower()), names[0])
    x = cols.pop(xName)
    for other in [n for n in cols if n == RESOLUTION_COLUMN or "freq" in n.lower() or "resol" in n.lower()]:
        cols.pop(other)  # the other x column (resolution next to frequency)
    if "freq" not in xName.lower() and "res" in xName.lower():
        with np.errstate(divide="ignore"):
            x = np.where(x > 0, 1.0 / x, 0.0)
    return xName, x, cols


class DeepEMhancerPlotViewer(_DeepEMhancerViewer):
    """Central orthogonal slices (input vs enhanced) and FSC curves, as matplotlib figures."""

    _label = "Slices and FSC (matplotlib)"

    def plotSlices(self, prot):
        """Central slices of the input, the enhanced map and, when there is one, the confidence map (0..1,
        with a colour bar) beside them."""
        from pyworkflow.gui.plotter import Plotter

        maps = [(label, path, False) for label, path in self._maps(prot)]
        if prot.hasAttribute("outputConfidence"):
            path = os.path.abspath(stripFormat(prot.outputConfidence.getFileName()))
            maps.append(("confidence: %s" % os.path.basename(path), path, True))
        plotter = Plotter(x=len(maps), y=3, figsize=(9, 3 * len(maps)),
                          windowTitle="DeepEMhancer: central slices")
        for label, path, isConfidence in maps:
            data = readMap(path)
            nz, ny, nx = data.shape
            for title, img in (("XY (z=%d)" % (nz // 2), data[nz // 2]),
                               ("XZ (y=%d)" % (ny // 2), data[:, ny // 2, :]),
                               ("YZ (x=%d)" % (nx // 2), data[:, :, nx // 2])):
                ax = plotter.createSubPlot("%s\n%s" % (label, title), None, None)
                if isConfidence:
                    image = ax.imshow(img, cmap=CONFIDENCE_CMAP, vmin=0.0, vmax=1.0, origin="lower")
                    plotter.getFigure().colorbar(image, ax=ax, fraction=0.046, pad=0.04)
                else:
                    ax.imshow(img, cmap="gray", origin="lower")
        plotter.tightLayout()
        plotter.getFigure().savefig(prot._getExtraPath(SLICES_PNG), dpi=80)
        return plotter

    def fscTables(self, prot):
        found = [prot.fscCurveFile.get()] if prot.fscCurveFile.get() else []
        for pattern in EVALUATE_GLOBS:
            found += glob.glob(prot._getExtraPath(pattern))
        found = [os.path.abspath(f) for f in found]
        return sorted(set(found), key=found.index)  # the run's own curve first

    def plotFsc(self, prot, tables):
        from pyworkflow.gui.plotter import Plotter

        plotter = Plotter(windowTitle="DeepEMhancer: FSC")
        ax = plotter.createSubPlot("FSC", "spatial frequency (1/A)", "FSC")
        own = prot.fscCurveFile.get()
        for table in tables:
            _, x, curves = readFscTable(table)
            for name, values in curves.items():
                if own and os.path.abspath(table) == os.path.abspath(own):
                    label = "half maps (this run): FSC-0.143 %.2f A" % prot.halfMapFsc0143.get()
                else:
                    label = "%s: %s" % (os.path.basename(table), name)
                ax.plot(x, values, label=label)
        limit = prot.resolutionLimitUsed.get()
        if limit:
            ax.axvline(1.0 / limit, color="tab:red", linestyle=":", linewidth=1,
                       label="resolution limit %.2f A" % limit)
        ax.axhline(0.143, color="grey", linestyle="--", linewidth=0.8, label="0.143")
        ax.set_ylim(-0.1, 1.05)
        ax.legend(fontsize=7)
        plotter.tightLayout()
        plotter.getFigure().savefig(prot._getExtraPath(FSC_PNG), dpi=80)
        return plotter

    def _visualize(self, obj, **kwargs):
        prot = self._prot(obj)
        notReady = self._notReady(prot)
        if notReady:
            return notReady
        views = [self.plotSlices(prot)]
        tables = self.fscTables(prot)
        if tables:
            views.append(self.plotFsc(prot, tables))
        return views
