"""Shared helpers of the Scipion tests: synthetic maps (mrcfile), test weights, geometry checks."""

import os
import subprocess

import mrcfile
import numpy as np
from deepemhancer import Plugin

#: Non-unit voxel size and non-zero header origin prove that the geometry is carried through.
VOXEL = 1.3
BOX = 32
HEADER_ORIGIN = (12.5, -7.0, 30.0)  # (x, y, z) in A, written in the MRC header


def writeMrc(path, data, voxel=VOXEL, origin=HEADER_ORIGIN):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = voxel
        m.header.origin = origin
    return path


def blob(box=BOX):
    """A smooth 'molecule': two overlapping Gaussian blobs (float32, (Z, Y, X))."""
    z, y, x = np.mgrid[:box, :box, :box].astype(np.float32) - box / 2
    r1 = (x - 3) ** 2 + y ** 2 + (z + 2) ** 2
    r2 = (x + 4) ** 2 + (y - 3) ** 2 + (z - 3) ** 2
    return (np.exp(-r1 / 18.0) + 0.7 * np.exp(-r2 / 12.0)).astype(np.float32)


def makeHalfMaps(folder, box=BOX, voxel=VOXEL, seed=0, prefix=""):
    """Two noisy half-maps of the same blob; returns (half1, half2) paths."""
    rng = np.random.default_rng(seed)
    signal = blob(box)
    return tuple(writeMrc(os.path.join(folder, "%shalf%d.mrc" % (prefix, i)),
                          signal + 0.1 * rng.standard_normal(signal.shape), voxel)
                 for i in (1, 2))


def makeMask(folder, box=BOX, voxel=VOXEL, name="mask.mrc"):
    z, y, x = np.mgrid[:box, :box, :box] - box / 2
    return writeMrc(os.path.join(folder, name), (x ** 2 + y ** 2 + z ** 2 < (box / 3) ** 2), voxel)


def readHeader(path):
    """(shape (z, y, x), voxel (x, y, z), origin (x, y, z)) of an MRC file."""
    with mrcfile.open(path.split(":")[0], header_only=True, permissive=True) as m:
        h = m.header
        return ((int(h.nz), int(h.ny), int(h.nx)),
                tuple(float(v) for v in m.voxel_size.item()),
                (float(h.origin.x), float(h.origin.y), float(h.origin.z)))


TEST_MODELS = ("tightTarget", "wideTarget", "highRes", "maskNormalized")


def makeTestWeights(folder=None):
    """Small random-weight models (file names of the registry) made by the engine's own helper, run
    in the managed environment: the protocol tests exercise the real weights/card/checksum path but
    stay fast on 2 CPU cores (48^3 cubes: one cube per 32^3 map at 1.3 A/px). Made once per engine
    version under $SCIPION_USER_DATA and reused. Returns the folder (use it as DEEPEMHANCER_WEIGHTS_DIR)."""
    import pyworkflow as pw
    from deepemhancer import ENGINE_VERSION

    folder = folder or os.path.join(pw.Config.SCIPION_USER_DATA, "deepemhancer_test_weights", ENGINE_VERSION)
    if all(os.path.exists(os.path.join(folder, m + ext)) for m in TEST_MODELS for ext in (".pt", ".json")):
        return folder
    os.makedirs(folder, exist_ok=True)
    code = ("from deepemhancer_engine.testing import make_random_weights as m\n"
            "for n in %r:\n"
            "    m(%r, n, filters=(4, 8, 16), tile=48, note='RANDOM WEIGHTS - Scipion plugin tests')\n"
            % (TEST_MODELS, folder))
    subprocess.run("%s -c %s" % (Plugin.getPython(), _shQuote(code)), shell=True, check=True,
                   env=Plugin.getEnviron())
    return folder


class TestWeightsMixin:
    """Points DEEPEMHANCER_WEIGHTS_DIR (inherited by protocol processes) at the test weights for a class,
    and the engine's null-response cache (DEEPEMHANCER_CACHE) at a folder beside them, not ~/.cache."""

    _ENV = ("DEEPEMHANCER_WEIGHTS_DIR", "DEEPEMHANCER_CACHE")

    @classmethod
    def useTestWeights(cls):
        cls._savedEnv = {name: os.environ.get(name) for name in cls._ENV}
        cls.weightsDir = makeTestWeights()
        os.environ["DEEPEMHANCER_WEIGHTS_DIR"] = cls.weightsDir
        os.environ["DEEPEMHANCER_CACHE"] = os.path.join(cls.weightsDir, "null-cache")

    @classmethod
    def tearDownClass(cls):
        for name, value in getattr(cls, "_savedEnv", {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _shQuote(text):
    import shlex

    return shlex.quote(text)
