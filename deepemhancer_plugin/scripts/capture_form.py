#!/usr/bin/env python
"""Screenshot of the ProtDeepEMhancer form in the real Scipion GUI (docs/gui_protocol_form.png).

Needs a display (e.g. ``Xvfb :77 -screen 0 1000x820x24 &  export DISPLAY=:77``) and ImageMagick's
``import``. Two captures show every parameter between them (conditional ones depend on the mode):
(a) two half-maps, noise-statistics normalisation, cleaning on; (b) one map, mask normalisation.

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
        prot.useHalfMaps.set(True)
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
    win.root.geometry("980x800+0+0")

    state = {}

    def shoot():
        # asynchronous: `import` needs the X server while Tk keeps serving its window
        print("capturing", out, flush=True)
        state["proc"] = subprocess.Popen(["import", "-window", "root", out])
        win.root.after(200, waitShot)

    def waitShot():
        if state["proc"].poll() is None:
            win.root.after(200, waitShot)
        else:
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
    shots = [os.path.join(tmp, "form_%s.png" % mode) for mode in ("a", "b")]
    for mode, shot in zip(("a", "b"), shots):
        subprocess.run([sys.executable, "-m", "deepemhancer.scripts.capture_form", "--shot", mode, shot],
                       check=True, timeout=300)
    subprocess.run(["convert", shots[0], shots[1], "+append", "-resize", "75%", out], check=True)
    print("wrote", out)


if __name__ == "__main__":
    main()
