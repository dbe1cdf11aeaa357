"""ProtDeepEMhancer in a real headless project, through the managed engine environment, on the CPU.

Synthetic 32^3 maps at 1.3 A/px with a non-zero origin; small random-weight models made by the
engine's own helper (DEEPEMHANCER_WEIGHTS_DIR) keep each run to seconds.
"""

import json
import os
import shutil
import time

import numpy as np
from deepemhancer.protocols import ProtDeepEMhancer
from deepemhancer.tests.common import (
    BOX,
    VOXEL,
    TestWeightsMixin,
    blob,
    makeHalfMaps,
    makeMask,
    readHeader,
    writeMrc,
)
from pwem.protocols import ProtImportMask, ProtImportVolumes
from pyworkflow.tests import BaseTest, setupTestProject

#: Scipion-level origin given at import (setOrigCoord): proves the protocol carries it to the output.
SCIPION_ORIGIN = (10.0, 20.0, 30.0)


class DeepEMhancerTestBase(TestWeightsMixin, BaseTest):
    """Project, synthetic data, test weights (DEEPEMHANCER_WEIGHTS_DIR for the protocol processes)."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.dataDir = os.path.join(cls.proj.path, "inputData")
        cls.half1, cls.half2 = makeHalfMaps(cls.dataDir)
        cls.useTestWeights()

    @classmethod
    def importVolume(cls, path, sampling=VOXEL, origin=SCIPION_ORIGIN, label=None):
        kw = dict(filesPath=path, samplingRate=sampling, objLabel=label or os.path.basename(path))
        if origin is not None:
            kw.update(setOrigCoord=True, x=origin[0], y=origin[1], z=origin[2])
        prot = cls.newProtocol(ProtImportVolumes, **kw)
        cls.launchProtocol(prot)
        return prot

    @classmethod
    def newDeepEMhancer(cls, **kw):
        if "inputHalf1" in kw or "inputHalf2" in kw:
            kw.setdefault("halfMapsAttached", False)  # the two half-maps given one by one
        kw.setdefault("useGpu", False)
        kw.setdefault("numberOfThreads", 2)
        return cls.newProtocol(ProtDeepEMhancer, **kw)

    def refresh(self, prot):
        """Reload the protocol's status and outputs from its run database."""
        self.proj._updateProtocol(prot)
        return prot

    def assertGeometry(self, prot, ref):
        """Output: same dims, sampling, Scipion origin as the input; MRC header as the input file's."""
        out = prot.outputVolume
        self.assertEqual(out.getDim(), (BOX, BOX, BOX))
        self.assertEqual(out.getDim(), ref.getDim())
        self.assertAlmostEqual(out.getSamplingRate(), ref.getSamplingRate(), places=6)
        self.assertEqual(out.getOrigin(force=True).getShifts(), ref.getOrigin(force=True).getShifts())
        outFn = out.getFileName().split(":")[0]
        self.assertEqual(os.path.abspath(outFn), prot.getOutputPath())
        self.assertTrue(prot.getOutputPath().startswith(os.path.abspath(prot._getExtraPath())))
        shapeO, voxO, origO = readHeader(outFn)
        shapeI, voxI, origI = readHeader(prot._engineInputPaths()[0])
        self.assertEqual(shapeO, shapeI)
        for a, b in zip(voxO + origO, voxI + origI):
            self.assertAlmostEqual(a, b, places=3)


class TestDeepEMhancerProtocol(DeepEMhancerTestBase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.imp1 = cls.importVolume(cls.half1, label="half1")
        cls.imp2 = cls.importVolume(cls.half2, label="half2")

    def test_halfMaps_and_singleMap_in_parallel(self):
        """Two protocols of one project at the same time: each writes only inside its own run folder."""
        pHalves = self.newDeepEMhancer(objLabel="halves", useHalfMaps=True,
                                       inputHalf1=self.imp1.outputVolume, inputHalf2=self.imp2.outputVolume)
        pSingle = self.newDeepEMhancer(objLabel="single", useHalfMaps=False, inputVolume=self.imp1.outputVolume,
                                       normalization=1, noiseMean=0.0, noiseStd=0.1, modelType=1,
                                       performCleaning=True, cleaningStrength=0.2, blending=1, stride=16,
                                       resolutionLimit=6.5)
        for prot in (pHalves, pSingle):
            self.assertEqual(prot.validate(), [])
            self.proj.launchProtocol(prot, wait=False)
        deadline = time.time() + 1200  # generous: CI machines may be loaded
        while time.time() < deadline:
            pHalves, pSingle = (self.refresh(p) for p in (pHalves, pSingle))
            if all(not p.isActive() for p in (pHalves, pSingle)):
                break
            time.sleep(1)
        for prot in (pHalves, pSingle):
            self.assertTrue(prot.isFinished(), "%s: %s" % (prot.getObjLabel(), prot.getErrorMessage()))
            self.assertGeometry(prot, self.imp1.outputVolume)
        self.assertNotEqual(pHalves.getOutputPath(), pSingle.getOutputPath())
        # half-maps linked to the output, source relation recorded
        self.assertEqual(len(pHalves.outputVolume.getHalfMaps().split(",")), 2)
        self.assertFalse(pSingle.outputVolume.hasHalfMaps())
        # the engine got this run's own tmp dir and files only
        for prot, other in ((pHalves, pSingle), (pSingle, pHalves)):
            args = " ".join(prot.getEngineArgList())
            self.assertNotIn(other.getWorkingDir(), args)
            with open(prot.getStdoutLog()) as f:
                log = f.read()
            self.assertIn(prot.getOutputPath(), log)
        args = pSingle.getEngineArgList()
        self.assertEqual(args[args.index("-p") + 1], "wideTarget")
        self.assertEqual(args[args.index("--noiseStats") + 1:args.index("--noiseStats") + 3], ["0", "0.1"])
        self.assertIn("--cleaningStrength", args)
        self.assertEqual(args[args.index("--device") + 1], "cpu")
        self.assertEqual(args[args.index("--blend") + 1], "constant")
        self.assertEqual(args[args.index("-s") + 1], "1.3")
        self.assertNotIn("-i2", args)
        self.assertEqual(args[args.index("--resolution") + 1], "6.5")
        self.assertIn("-i2", pHalves.getEngineArgList())
        self.assertNotIn("--resolution", pHalves.getEngineArgList())  # automatic: the half-map FSC
        self.assertProvenance(pHalves, threads=2)
        self.assertProvenance(pSingle, threads=2)
        self.assertConfidence(pHalves)
        self.assertFalse(pSingle.hasAttribute("outputConfidence"))  # one map: no confidence
        self.assertNotIn("--confidence", pSingle.getEngineArgList())
        self.assertFalse(pSingle.evalParamCondition("computeConfidence"))  # hidden for one map
        self.assertIn("Output limited to 6.50 A (set by hand), with the shell amplitudes of the classical",
                      "\n".join(pSingle.summary()))
        self.assertNotIn("--no-match-amplitudes", pHalves.getEngineArgList())
        pHalves.matchAmplitudes.set(False)
        self.assertIn("--no-match-amplitudes", pHalves.getEngineArgList())
        pHalves.limitResolution.set(False)
        self.assertIn("--no-resolution-limit", pHalves.getEngineArgList())
        self.assertNotIn("--no-match-amplitudes", pHalves.getEngineArgList())  # no limit: nothing to match
        self.assertFalse(pHalves.evalParamCondition("matchAmplitudes"))

    def assertProvenance(self, prot, threads):
        """Summary and methods name the weights (name, version, SHA-256 prefix, simulated data), the
        half-map FSC-0.143 and the limit the engine used (its sidecar); the engine ran with the
        protocol's threads; the FSC curve is kept in the run."""
        with open(prot.getSidecarPath()) as f:
            record = json.load(f)
        self.assertEqual(record["threads"]["torch"], threads)  # --threads honoured by the engine process
        weights = record["weights"]
        self.assertEqual(weights["name"], prot.getModelName())
        sha = weights["sha256"][:12]
        self.assertEqual(len(sha), 12)
        summary, methods = "\n".join(prot.summary()), "\n".join(prot.methods())
        for text in (summary, methods):
            self.assertIn("%s %s (SHA-256 %s)" % (weights["name"], weights["version"], sha), text)
            self.assertIn("simulated data", text)
        self.assertIn("[SanchezGarcia2021]", methods)
        self.assertIn("noise was subtracted", methods)
        res = record["resolution"]
        limit = res["limit_A"]
        self.assertAlmostEqual(prot.resolutionLimitUsed.get(), limit, places=6)
        self.assertIn("kept up to %.2f A" % limit, methods)
        self.assertIn("Output limited to %.2f A" % limit, summary)
        if prot.useHalfMaps:
            self.assertAlmostEqual(prot.halfMapFsc0143.get(), res["half_map_fsc0.143_A"], places=6)
            self.assertEqual(limit, res["half_map_fsc0.143_A"])
            self.assertIn("Half-map FSC-0.143 (unmasked): %.2f A" % limit, summary)
            self.assertIn("the unmasked half-map FSC-0.143", methods)
            self.assertEqual(prot.fscCurveFile.get(), prot.getFscCurvePath())
            self.assertTrue(os.path.exists(prot.fscCurveFile.get()))
        else:
            self.assertIsNone(prot.halfMapFsc0143.get())
            self.assertIsNone(prot.fscCurveFile.get())

    def assertConfidence(self, prot):
        """outputConfidence: a Volume on the enhanced map's grid, values in 0..1; the summary gives the
        fraction of the molecule with confidence >= 0.5, as the engine's sidecar records it."""
        import mrcfile

        self.assertTrue(prot.evalParamCondition("computeConfidence"))
        args = prot.getEngineArgList()
        self.assertEqual(args[args.index("--confidence") + 1], prot.getConfidencePath())
        conf, out = prot.outputConfidence, prot.outputVolume
        self.assertEqual(conf.getDim(), out.getDim())
        self.assertAlmostEqual(conf.getSamplingRate(), out.getSamplingRate(), places=6)
        self.assertEqual(conf.getOrigin(force=True).getShifts(), out.getOrigin(force=True).getShifts())
        self.assertEqual(readHeader(conf.getFileName()), readHeader(out.getFileName()))
        with mrcfile.open(prot.getConfidencePath()) as m:
            data = np.asarray(m.data)
        self.assertTrue(data.dtype == np.float32 and data.min() >= 0 and data.max() <= 1)
        with open(prot.getSidecarPath()) as f:
            found = json.load(f)["confidence"]
        self.assertAlmostEqual(prot.confidenceTrusted.get(), found["fraction_trusted"], places=6)
        self.assertEqual(found["trusted_threshold"], 0.5)
        self.assertIn("Confidence: %.0f%% of the molecule (enhanced density above %.4g) has confidence >= 0.5"
                      % (100 * found["fraction_trusted"], found["contour_level"]), "\n".join(prot.summary()))
        self.assertIn("confidence map", "\n".join(prot.methods()))
        with open(prot.getStderrLog()) as f:
            self.assertNotIn("Traceback", f.read())  # e.g. two outputs sharing one origin object fail to store

    def test_half_maps_attached(self):
        """The default: the half-maps registered with the input volume (as Relion/cryoSPARC outputs)."""
        imp = self.newProtocol(ProtImportVolumes, filesPath=self.half1, samplingRate=VOXEL, setHalfMaps=True,
                               half1map=self.half1, half2map=self.half2, objLabel="volume with halves")
        self.launchProtocol(imp)
        prot = self.newDeepEMhancer(inputVolume=imp.outputVolume, numberOfThreads=1)
        self.assertTrue(prot.halfMapsAttached.get())
        self.assertEqual(prot.validate(), [])
        args = prot.getEngineArgList()
        self.assertIn("-i2", args)
        self.assertEqual(args[args.index("--threads") + 1], "1")
        self.launchProtocol(prot)
        self.assertEqual(len(prot.outputVolume.getHalfMaps().split(",")), 2)
        self.assertProvenance(prot, threads=1)

    def test_mask_normalization(self):
        maskImp = self.newProtocol(ProtImportMask, maskPath=makeMask(self.dataDir), samplingRate=VOXEL)
        self.launchProtocol(maskImp)
        prot = self.newDeepEMhancer(useHalfMaps=True, inputHalf1=self.imp1.outputVolume,
                                    inputHalf2=self.imp2.outputVolume, normalization=2,
                                    inputMask=maskImp.outputMask)
        args = prot.getEngineArgList()
        self.assertIn("-m", args)
        self.assertNotIn("-p", args)  # the mask-normalised model is implied
        self.launchProtocol(prot)
        self.assertGeometry(prot, self.imp1.outputVolume)
        self.assertIn("maskNormalized", "\n".join(prot.summary()))

    def test_engine_failure_then_rerun(self):
        """An engine failure fails the protocol with the engine's one-line reason; a re-run works."""
        imp = self.importVolume(self.half1, label="to be broken")  # copied into the import's extra
        broken = os.path.abspath(imp.outputVolume.getFileName().split(":")[0])
        good = broken + ".good"
        shutil.copy(broken, good)
        with open(broken, "r+b") as f:  # keep the header, drop most of the data
            f.truncate(1024 + 4 * BOX * BOX)
        prot = self.newDeepEMhancer(useHalfMaps=True, inputHalf1=imp.outputVolume,
                                    inputHalf2=self.imp2.outputVolume)
        self.proj.launchProtocol(prot, wait=True)
        prot = self.refresh(prot)
        self.assertTrue(prot.isFailed())
        msg = prot.getErrorMessage()
        self.assertIn("DeepEMhancer failed (exit 2, bad input): error: ", msg)
        self.assertIn(os.path.basename(broken), msg)
        self.assertEqual(len(msg.splitlines()), 1, msg)
        # fix the input and run the same protocol again
        shutil.copy(good, broken)
        self.proj.launchProtocol(prot, wait=True)
        prot = self.refresh(prot)
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        self.assertTrue(os.path.exists(prot.getOutputPath()))


class TestDeepEMhancerValidate(DeepEMhancerTestBase):
    """_validate catches mismatched inputs before anything runs (no engine run in this class)."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)  # no weights needed: nothing runs
        cls.dataDir = os.path.join(cls.proj.path, "inputData")
        cls.half1, cls.half2 = makeHalfMaps(cls.dataDir)
        cls.imp1 = cls.importVolume(cls.half1, origin=None, label="half1")
        cls.imp2 = cls.importVolume(cls.half2, origin=None, label="half2")
        big = writeMrc(os.path.join(cls.dataDir, "big.mrc"), blob(40))
        cls.impBig = cls.importVolume(big, origin=None, label="big")
        cls.impOtherSampling = cls.importVolume(cls.half2, sampling=1.5, origin=None, label="half2@1.5")
        cls.maskBig = cls.newProtocol(ProtImportMask, maskPath=makeMask(cls.dataDir, box=40, name="m40.mrc"),
                                      samplingRate=VOXEL)
        cls.launchProtocol(cls.maskBig)

    @classmethod
    def tearDownClass(cls):
        pass

    def _errors(self, **kw):
        kw.setdefault("useHalfMaps", True)
        prot = self.newDeepEMhancer(**kw)
        return "\n".join(prot.validate())

    def test_ok(self):
        self.assertEqual(self._errors(inputHalf1=self.imp1.outputVolume, inputHalf2=self.imp2.outputVolume), "")

    def test_half_dimensions(self):
        err = self._errors(inputHalf1=self.imp1.outputVolume, inputHalf2=self.impBig.outputVolume)
        self.assertIn("The half-maps have different dimensions", err)
        self.assertIn("32x32x32", err)
        self.assertIn("40x40x40", err)

    def test_half_sampling(self):
        err = self._errors(inputHalf1=self.imp1.outputVolume, inputHalf2=self.impOtherSampling.outputVolume)
        self.assertIn("different sampling rates", err)
        self.assertIn("1.3000", err)
        self.assertIn("1.5000", err)

    def test_half_origin(self):
        impOrigin = self.importVolume(self.half2, origin=(5.0, 5.0, 5.0), label="half2 shifted")
        err = self._errors(inputHalf1=self.imp1.outputVolume, inputHalf2=impOrigin.outputVolume)
        self.assertIn("different origins", err)

    def test_attached_by_default_and_volume_without_halves(self):
        prot = self.newProtocol(ProtDeepEMhancer, inputVolume=self.imp1.outputVolume, useGpu=False)
        self.assertTrue(prot.useHalfMaps.get() and prot.halfMapsAttached.get())  # the defaults
        errors = prot.validate()
        self.assertEqual(len(errors), 1, errors)
        self.assertEqual(len(errors[0].splitlines()), 1)
        self.assertIn("has no half-maps attached", errors[0])
        self.assertIn("two-half-maps mode", errors[0])
        self.assertIn(os.path.basename(self.imp1.outputVolume.getFileName().split(":")[0]), errors[0])

    def test_one_gpu_only(self):
        kw = dict(useHalfMaps=False, inputVolume=self.imp1.outputVolume, useGpu=True, cpuFallback=True)
        err = self._errors(gpuList="0,1", **kw)
        self.assertIn("DeepEMhancer runs on one GPU: give one GPU ID, not 0,1.", err)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertNotIn("runs on one GPU", self._errors(gpuList="1", **kw))
        prot = self.newDeepEMhancer(gpuList="1", **kw)
        args = prot.getEngineArgList()
        self.assertEqual(args[args.index("-g") + 1], "1")
        self.assertEqual(args.count("-g"), 1)
        self.assertNotIn("runs on one GPU", self._errors(gpuList="0,1", **dict(kw, useGpu=False)))

    def test_command_line_options(self):
        base = dict(useHalfMaps=False, inputVolume=self.imp1.outputVolume)
        args = self.newDeepEMhancer(numberOfThreads=3, **base).getEngineArgList()
        self.assertEqual(args[args.index("--threads") + 1], "3")
        self.assertNotIn("--lattice", args)  # automatic: the engine's default
        self.assertNotIn("--no-null-correction", args)
        halves = dict(inputHalf1=self.imp1.outputVolume, inputHalf2=self.imp2.outputVolume)
        self.assertIn("--confidence", self.newDeepEMhancer(**halves).getEngineArgList())  # the default
        self.assertNotIn("--confidence", self.newDeepEMhancer(computeConfidence=False, **halves).getEngineArgList())
        args = self.newDeepEMhancer(lattice=2, nullCorrection=False, **base).getEngineArgList()
        self.assertEqual(args[args.index("--lattice") + 1], "cubic")
        self.assertIn("--no-null-correction", args)
        self.assertEqual(self.newDeepEMhancer(lattice=1, **base).getEngineArgList().count("fcc"), 1)
        self.assertIn("Threads must be at least 1", self._errors(numberOfThreads=0, **base))

    def test_form_levels(self):
        """Expert parameters at the advanced level; inputs, model, GPU and cleaning on the main form."""
        from pyworkflow.protocol.params import LEVEL_ADVANCED, LEVEL_NORMAL

        form = self.newDeepEMhancer().getDefinition()
        levels = {name: param.expertLevel.get() for name, param in form.iterParams()}
        advanced = {"batchSize", "stride", "blending", "lattice", "limitResolution", "resolutionLimit",
                    "matchAmplitudes", "nullCorrection", "cpuFallback"}
        main = {"useHalfMaps", "halfMapsAttached", "computeConfidence", "inputHalf1", "inputHalf2", "inputVolume",
                "normalization",
                "inputMask", "modelType", "performCleaning", "cleaningStrength", "useGpu", "gpuList"}
        self.assertEqual({n for n in advanced | main if levels[n] == LEVEL_ADVANCED}, advanced)
        self.assertTrue(all(levels[n] == LEVEL_NORMAL for n in main))
        self.assertEqual(form.getParam("lattice").choices, ["automatic", "fcc", "cubic"])

    def test_missing_half(self):
        err = self._errors(inputHalf1=self.imp1.outputVolume)
        self.assertIn("Both half-maps", err)

    def test_mask_dimensions(self):
        err = self._errors(useHalfMaps=False, inputVolume=self.imp1.outputVolume, normalization=2,
                           inputMask=self.maskBig.outputMask)
        self.assertIn("The mask", err)
        self.assertIn("40x40x40", err)

    def test_mask_missing_and_bad_values(self):
        err = self._errors(useHalfMaps=False, inputVolume=self.imp1.outputVolume, normalization=2)
        self.assertIn("needs a mask", err)
        err = self._errors(useHalfMaps=False, inputVolume=self.imp1.outputVolume, normalization=1, noiseStd=0.0,
                           batchSize=0, stride=100, performCleaning=True, cleaningStrength=2.0, resolutionLimit=-2.0)
        for text in ("Noise std must be positive", "Batch size", "Stride", "Cleaning strength", "Resolution must"):
            self.assertIn(text, err)

    def test_gpu_asked_none_available(self):
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # no GPU visible, whatever the machine has
        try:
            kw = dict(useHalfMaps=False, inputVolume=self.imp1.outputVolume, useGpu=True, gpuList="0")
            err = self._errors(cpuFallback=False, **kw)
            self.assertIn("A GPU was asked for", err)
            self.assertIn("CUDA_VISIBLE_DEVICES=-1", err)
            self.assertEqual(self._errors(cpuFallback=True, **kw), "")  # falls back to the CPU
            prot = self.newDeepEMhancer(cpuFallback=True, **kw)
            self.assertIn("run on the CPU", "\n".join(prot.warnings()))
            args = prot.getEngineArgList()
            self.assertEqual(args[args.index("--device") + 1], "auto")
            self.assertEqual(args[args.index("-g") + 1], "0")
        finally:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES")
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved

    def test_validation_blocks_launch(self):
        prot = self.newDeepEMhancer(useHalfMaps=True, inputHalf1=self.imp1.outputVolume,
                                    inputHalf2=self.impBig.outputVolume)
        self.proj.launchProtocol(prot, wait=True)
        prot = self.refresh(prot)
        self.assertTrue(prot.isFailed())
        self.assertIn("different dimensions", prot.getErrorMessage())
        self.assertFalse(os.path.exists(prot.getOutputPath()))
        with open(prot.getStdoutLog()) as f:
            self.assertNotIn("deepemhancer -i", f.read())  # the engine never started

