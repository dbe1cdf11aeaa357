#!/usr/bin/env python
"""Screenshot of the ProtDeepEMhancer form in the real Scipion GUI (docs/gui_protocol_form.png).

Needs a display (e.g. ``Xvfb :77 -screen 0 1000x980x24 &  export DISPLAY=:77``); the screen is grabbed
with Pillow (Scipion's own, built with XCB). Three captures side by side: (a) the form as it opens
(two half-maps attached to a volume; the advanced level hidden); (b) the advanced level shown, the two
half-maps given one by one, noise-statistics normalisation, cleaning on; (c) the advanced level shown,
one map, mask normalisation.

    scipion3 python -m deepemhancer.scripts.capture_form OUT.png
"""

import os
import subprocess
import sys
import tempfile


def makeProject(name="DeepEMhancerFormShot"):
    from deepemhancer.scripts.run_headless_example import writeSyntheticHalfMaps
    from deepemhancer.tests.common import makeMask
    from pwem.protocols import ProtImportMask, ProtImportVolumes
    from pyworkflow.project import Manager

    manager = Manager()
    if manager.hasProject(name):
        manager.deleteProject(name)
    project = manager.createProject(name)
    os.chdir(project.getPath())
    data = os.path.abspath(project.getPath("inputData"))
    half1, half2 = writeSyntheticHalfMaps(data)
    imports = []
    for i, path in enumerate((half1, half2), 1):
        imp = project.newProtocol(ProtImportVolumes, objLabel="import half-map %d" % i,
                                  filesPath=path, samplingRate=1.3)
        project.launchProtocol(imp, wait=True)
        imports.append(imp)
    mask = project.newProtocol(ProtImportMask, objLabel="import mask", maskPath=makeMask(data), samplingRate=1.3)
    project.launchProtocol(mask, wait=True)
    return project, imports, mask


def newForm(project, imports, mask, mode):
    from deepemhancer.protocols import ProtDeepEMhancer
    from pyworkflow.protocol.params import LEVEL_ADVANCED

    prot = project.newProtocol(ProtDeepEMhancer, objLabel="deepemhancer")
    prot.inputHalf1.set(imports[0])
    prot.inputHalf1.setExtended("outputVolume")
    prot.inputHalf2.set(imports[1])
    prot.inputHalf2.setExtended("outputVolume")
    prot.inputVolume.set(imports[0])
    prot.inputVolume.setExtended("outputVolume")
    prot.inputMask.set(mask)
    prot.inputMask.setExtended("outputMask")
    if mode == "a":
        return prot  # the defaults
    prot.expertLevel.set(LEVEL_ADVANCED)
    if mode == "b":
        prot.useHalfMaps.set(True)
        prot.halfMapsAttached.set(False)
        prot.normalization.set(1)
        prot.noiseMean.set(0.0)
        prot.noiseStd.set(0.1)
        prot.performCleaning.set(True)
    else:
        prot.useHalfMaps.set(False)
        prot.normalization.set(2)
    return prot


def capture(prot, out, delayMs=4000):
    import pyworkflow.gui.project  # noqa: F401 - imports form.py in the order pyworkflow expects
    from pyworkflow.gui.form import FormWindow

    win = FormWindow("Protocol Run: ProtDeepEMhancer", prot, lambda *a, **k: None)
    win.root.geometry("980x960+0+0")

    def shoot():
        from PIL import ImageGrab

        print("capturing", out, flush=True)
        win.root.update()  # everything drawn before the grab
        ImageGrab.grab(xdisplay=os.environ.get("DISPLAY")).save(out)
        win.root.quit()  # leave mainloop (self.root may be a Toplevel of a hidden Tk root)

    win.root.after(delayMs, shoot)
    win.show(center=False)  # deiconify + mainloop


def shotMain(mode, out, projectName):
    """One capture in this process (one Tk root per process)."""
    from pyworkflow.project import Manager

    project = Manager().loadProject(projectName)
    os.chdir(project.getPath())
    runs = project.getRuns()
    imports = [r for r in runs if r.getClassName() == "ProtImportVolumes"]
    mask = [r for r in runs if r.getClassName() == "ProtImportMask"][0]
    capture(newForm(project, imports, mask, mode), out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("SCIPION_DOMAIN", "pwem")
    name = "DeepEMhancerFormShot"
    if argv and argv[0] == "--shot":
        return shotMain(argv[1], argv[2], name)
    out = os.path.abspath(argv[0] if argv else "gui_protocol_form.png")
    makeProject(name)
    tmp = tempfile.mkdtemp()
    modes = ("a", "b", "c")
    shots = [os.path.join(tmp, "form_%s.png" % mode) for mode in modes]
    for mode, shot in zip(modes, shots):
        subprocess.run([sys.executable, "-m", "deepemhancer.scripts.capture_form", "--shot", mode, shot],
                       check=True, timeout=300)
    appendScaled(shots, out, scale=0.6)
    print("wrote", out)


def appendScaled(shots, out, scale):
    """The captures side by side, scaled (Pillow)."""
    from PIL import Image

    images = [Image.open(s).convert("RGB") for s in shots]
    width, height = sum(i.width for i in images), max(i.height for i in images)
    sheet = Image.new("RGB", (width, height), "white")
    x = 0
    for image in images:
        sheet.paste(image, (x, 0))
        x += image.width
    sheet.resize((int(width * scale), int(height * scale)), Image.LANCZOS).save(out, optimize=True)


if __name__ == "__main__":
    main()
