#!/usr/bin/env python
"""Headless DeepEMhancer in Scipion: create a project, import two half-maps, run ProtDeepEMhancer on
the CPU, check the output geometry and write a ChimeraX script for it. No display needed.

Run it with Scipion's python (the launcher sets SCIPION_DOMAIN etc.)::

    scipion3 python -m deepemhancer.scripts.run_headless_example --half1 h1.mrc --half2 h2.mrc \\
        --sampling 1.3 --project DeepEMhancerDemo

Without --half1/--half2 it writes two synthetic 32^3 half-maps (1.3 A/px, non-zero origin) first.
Exit status 0 when the output exists and its sampling and dimensions equal the inputs'.
"""

import argparse
import os
import sys

import numpy as np


def parseArgs(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--half1", help="half-map 1 (MRC); default: synthetic")
    p.add_argument("--half2", help="half-map 2 (MRC); default: synthetic")
    p.add_argument("--sampling", type=float, default=None,
                   help="sampling rate in A/px (default: read from the half-map 1 header)")
    p.add_argument("--project", default="DeepEMhancerHeadless", help="project name (replaced if it exists)")
    p.add_argument("--model", default="tightTarget", choices=["tightTarget", "wideTarget", "highRes"])
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the protocol")
    p.add_argument("--weights-dir", default=None,
                   help="folder of model weights (sets DEEPEMHANCER_WEIGHTS_DIR); default: shipped weights")
    return p.parse_args(argv)


def writeSyntheticHalfMaps(folder, box=32, voxel=1.3):
    import mrcfile

    os.makedirs(folder, exist_ok=True)
    z, y, x = np.mgrid[:box, :box, :box].astype(np.float32) - box / 2
    signal = np.exp(-((x - 3) ** 2 + y ** 2 + z ** 2) / 18.0) + 0.7 * np.exp(-((x + 4) ** 2 + (y - 3) ** 2) / 12.0)
    rng = np.random.default_rng(0)
    paths = []
    for i in (1, 2):
        path = os.path.join(folder, "half%d.mrc" % i)
        with mrcfile.new(path, overwrite=True) as m:
            m.set_data((signal + 0.1 * rng.standard_normal(signal.shape)).astype(np.float32))
            m.voxel_size = voxel
            m.header.origin = (12.5, -7.0, 30.0)
        paths.append(path)
    return paths


def headerSampling(path):
    import mrcfile

    with mrcfile.open(path, header_only=True, permissive=True) as m:
        return float(m.voxel_size.x)


def main(argv=None):
    args = parseArgs(argv)
    os.environ.setdefault("SCIPION_DOMAIN", "pwem")
    if args.weights_dir:
        os.environ["DEEPEMHANCER_WEIGHTS_DIR"] = os.path.abspath(args.weights_dir)

    from deepemhancer.protocols import ProtDeepEMhancer
    from deepemhancer.viewers import DeepEMhancerChimeraViewer
    from pwem.protocols import ProtImportVolumes
    from pyworkflow.project import Manager

    manager = Manager()
    if manager.hasProject(args.project):
        manager.deleteProject(args.project)
    if args.half1 and args.half2:
        half1, half2 = (os.path.abspath(p) for p in (args.half1, args.half2))
    project = manager.createProject(args.project)
    os.chdir(project.getPath())  # protocols are launched with paths relative to the project folder
    print("project:", os.path.abspath(project.getPath()))
    if not (args.half1 and args.half2):
        half1, half2 = writeSyntheticHalfMaps(os.path.abspath(project.getPath("inputData")))
    sampling = args.sampling or headerSampling(half1)

    imports = []
    for i, path in enumerate((half1, half2), 1):
        imp = project.newProtocol(ProtImportVolumes, objLabel="import half-map %d" % i,
                                  filesPath=path, samplingRate=sampling)
        project.launchProtocol(imp, wait=True)
        if not imp.isFinished():
            sys.exit("import of %s failed: %s" % (path, imp.getErrorMessage()))
        imports.append(imp)

    prot = project.newProtocol(ProtDeepEMhancer, objLabel="deepemhancer (CPU)", useHalfMaps=True,
                               halfMapsAttached=False,
                               modelType=["tightTarget", "wideTarget", "highRes"].index(args.model),
                               useGpu=False, numberOfThreads=args.threads)
    for pointer, imp in zip((prot.inputHalf1, prot.inputHalf2), imports):
        pointer.set(imp)  # i.e. <import protocol>.outputVolume
        pointer.setExtended("outputVolume")
    errors = prot.validate()
    if errors:
        sys.exit("ProtDeepEMhancer validation failed:\n  " + "\n  ".join(errors))
    project.launchProtocol(prot, wait=True)
    if not prot.isFinished():
        sys.exit("ProtDeepEMhancer failed: %s" % prot.getErrorMessage())

    out, ref = prot.outputVolume, imports[0].outputVolume
    print("output:", os.path.abspath(out.getFileName().split(":")[0]))
    print("dimensions: %s (input %s)  sampling: %.4f A/px (input %.4f)"
          % (out.getDim(), ref.getDim(), out.getSamplingRate(), ref.getSamplingRate()))
    ok = out.getDim() == ref.getDim() and abs(out.getSamplingRate() - ref.getSamplingRate()) < 1e-6

    viewer = DeepEMhancerChimeraViewer(project=project, protocol=prot)
    cxc = viewer.writeScript(prot)
    print("ChimeraX script:", cxc)
    with open(cxc) as f:
        print(f.read())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
