"""ProtDeepEMhancer: deep-learning post-processing of a cryo-EM map (or its two half-maps).

The work runs in the engine's managed environment through its CLI (``deepemhancer -i ... -o ...``);
this module only builds the command line, checks inputs before anything runs, registers the output and
reads the provenance the engine writes beside it (weights, SHA-256, half-map FSC, resolution limit).
"""

import json
import math
import os
import re
import shutil
import subprocess

import pyworkflow.protocol.params as params
from deepemhancer import DEV_STATUS, ENGINE_VERSION, Plugin
from deepemhancer.constants import (
    BLEND_MODES,
    ENGINE_ERROR_PREFIX,
    LATTICE_AUTO,
    LATTICES,
    MODEL_TYPES,
    NORM_AUTO,
    NORM_MASK,
    NORM_STATS,
    NORMALIZATIONS,
    OUTPUT_CONFIDENCE,
    OUTPUT_FSC,
    OUTPUT_MAP,
    OUTPUT_SIDECAR,
)
from pwem.objects import Volume
from pwem.protocols import ProtAnalysis3D
from pyworkflow.object import Float, String
from pyworkflow.protocol.constants import GPU_LIST, USE_GPU
from pyworkflow.protocol.params import LEVEL_ADVANCED

MRC_EXTENSIONS = (".mrc", ".map", ".ccp4", ".mrcs", ".rec")
#: Relative tolerance when comparing sampling rates (A/px) of two inputs.
SAMPLING_RTOL = 1e-3
EXIT_MEANINGS = {2: "bad input", 3: "model weights problem", 4: "compute device problem"}
#: Characters of the weights' SHA-256 quoted in the summary and methods (as in the map's header labels).
SHA_PREFIX = 12


def stripFormat(fn):
    """'file.mrc:mrc' -> 'file.mrc' (Scipion appends the format to some file names)."""
    return fn.split(":")[0] if fn else fn


class ProtDeepEMhancer(ProtAnalysis3D):
    """Enhance a cryo-EM map with a PyTorch re-implementation of DeepEMhancer (Sanchez-Garcia et al.
    2021): a 3D U-Net that produces tightly-masked, locally sharpened maps from two half-maps
    (recommended) or one map. The network weights are this project's own, trained on simulated data,
    not the original's; the output keeps the network's detail only up to the half-map resolution, and
    the run records the weights (name, version, SHA-256), the half-map FSC and the limit used.
    """

    _label = "deepemhancer"
    _devStatus = DEV_STATUS
    _possibleOutputs = {"outputVolume": Volume, "outputConfidence": Volume}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # filled from the engine's sidecar when the output is registered
        self.halfMapFsc0143 = Float()
        self.resolutionLimitUsed = Float()
        self.weightsDescription = String()
        self.fscCurveFile = String()
        self.confidenceTrusted = Float()  # fraction of the molecule with confidence >= confidenceThreshold
        self.confidenceThreshold = Float()
        self.confidenceContour = Float()

    # ==================================================================================== DEFINE params
    def _defineParams(self, form):
        form.addHidden(USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU?",
                       help="No: run on the CPU (slower, always possible).")
        form.addHidden(GPU_LIST, params.StringParam, default="0",
                       label="GPU ID",
                       help="One GPU index, e.g. 0, counted among the GPUs visible to the job "
                            "(CUDA_VISIBLE_DEVICES is honoured). A run uses one GPU.")
        form.addSection(label="Input")

        group = form.addGroup("Input maps")
        group.addParam("useHalfMaps", params.BooleanParam, default=True,
                       label="Input: two half-maps?",
                       help="Yes (recommended): the two unfiltered half-maps of a refinement. "
                            "No: one map.")
        group.addParam("halfMapsAttached", params.BooleanParam, default=True,
                       condition="useHalfMaps",
                       label="Half-maps attached to a volume?",
                       help="Yes (default): take the half-maps registered with the input volume (Relion and "
                            "cryoSPARC refinements carry them). No: give the two half-maps yourself.")
        group.addParam("inputHalf1", params.PointerParam, pointerClass="Volume", allowsNull=True,
                       condition="useHalfMaps and not halfMapsAttached", important=True,
                       label="Half-map 1", help="First unfiltered half-map.")
        group.addParam("inputHalf2", params.PointerParam, pointerClass="Volume", allowsNull=True,
                       condition="useHalfMaps and not halfMapsAttached", important=True,
                       label="Half-map 2", help="Second half-map: same box size and sampling as half-map 1.")
        group.addParam("inputVolume", params.PointerParam, pointerClass="Volume", allowsNull=True,
                       condition="not useHalfMaps or halfMapsAttached", important=True,
                       label="Input map", help="The map to enhance (or the volume holding the half-maps).")

        group.addParam("computeConfidence", params.BooleanParam, default=True, condition="useHalfMaps",
                       label="Confidence map?",
                       help="Yes (default with two half-maps): also make a map of how far to trust the enhanced "
                            "map, voxel by voxel (0 to 1): each half-map is enhanced on its own and their local "
                            "agreement, calibrated against what noise alone gives, is the confidence. About 3 "
                            "times the run time. Output: outputConfidence, on the output's grid.")

        group = form.addGroup("Normalization")
        group.addParam("normalization", params.EnumParam, choices=NORMALIZATIONS, default=NORM_AUTO,
                       display=params.EnumParam.DISPLAY_HLIST, label="Normalization",
                       help="Automatic: noise statistics estimated from the solvent.\n"
                            "Noise statistics: give the mean and standard deviation of the solvent noise.\n"
                            "Mask: a binary mask of the molecule (uses the mask-normalised model).")
        group.addParam("noiseMean", params.FloatParam, default=0.0, condition="normalization == %d" % NORM_STATS,
                       label="Noise mean", help="Mean of the solvent noise (map units).")
        group.addParam("noiseStd", params.FloatParam, default=1.0, condition="normalization == %d" % NORM_STATS,
                       label="Noise std", help="Standard deviation of the solvent noise (map units, > 0).")
        group.addParam("inputMask", params.PointerParam, pointerClass="VolumeMask,Volume", allowsNull=True,
                       condition="normalization == %d" % NORM_MASK, label="Mask",
                       help="Binary mask of the molecule, same box size as the input.")

        group = form.addGroup("Model")
        group.addParam("modelType", params.EnumParam, choices=MODEL_TYPES, default=0,
                       condition="normalization != %d" % NORM_MASK,
                       display=params.EnumParam.DISPLAY_HLIST, label="Model",
                       help="tightTarget: tight masking (default). wideTarget: less aggressive masking. "
                            "highRes: maps better than ~4 A. With a mask, the mask-normalised model is used.\n"
                            "The names are the original DeepEMhancer's, the weights are not: they are this "
                            "project's, trained on simulated data (name, version and SHA-256 are recorded "
                            "in the run's summary and methods).")
        group.addParam("performCleaning", params.BooleanParam, default=False,
                       label="Remove small blobs?",
                       help="Post-processing that removes small disconnected densities (dust).")
        group.addParam("cleaningStrength", params.FloatParam, default=0.1, condition="performCleaning",
                       label="Cleaning strength",
                       help="Relative size (0-1) of the connected components removed.")

        group = form.addGroup("Advanced")
        group.addParam("batchSize", params.IntParam, default=8, label="Batch size", expertLevel=LEVEL_ADVANCED,
                       help="Number of 64^3 cubes processed at once; lower it if the GPU runs out of memory.")
        group.addParam("stride", params.IntParam, default=32, label="Stride (voxels)", expertLevel=LEVEL_ADVANCED,
                       help="Distance between the starts of overlapping 64^3 cubes (1-64). "
                            "Smaller: more overlap, slower. With gaussian blending and a stride of at most 32, "
                            "only half of the cubes run, in a 3-D checkerboard (fcc lattice); the original "
                            "DeepEMhancer is stride 16 with constant blending, every cube.")
        group.addParam("blending", params.EnumParam, choices=BLEND_MODES, default=0, expertLevel=LEVEL_ADVANCED,
                       display=params.EnumParam.DISPLAY_HLIST, label="Blending",
                       help="gaussian: weight overlapping cubes by a Gaussian window. "
                            "constant: plain average, as the original DeepEMhancer.")
        group.addParam("lattice", params.EnumParam, choices=LATTICES, default=LATTICE_AUTO,
                       expertLevel=LEVEL_ADVANCED, display=params.EnumParam.DISPLAY_HLIST, label="Cube lattice",
                       help="Which cubes of the grid run. automatic: fcc with gaussian blending and a stride "
                            "of at most 32, cubic otherwise. fcc: half of them, in a 3-D checkerboard. "
                            "cubic: all of them (the original DeepEMhancer).")
        group.addParam("limitResolution", params.BooleanParam, default=True, expertLevel=LEVEL_ADVANCED,
                       label="Limit to the data's resolution?",
                       help="Yes (default): keep the network's output only up to the resolution the data support, "
                            "so the map shows no detail finer than the half maps agree on. The resolution is the "
                            "half-map FSC-0.143 (unmasked), or the value below. No: keep everything the network "
                            "returns.")
        group.addParam("resolutionLimit", params.FloatParam, default=0.0, condition="limitResolution",
                       expertLevel=LEVEL_ADVANCED, label="Resolution (A)",
                       help="0: automatic (the half-map FSC-0.143 with two half maps; no limit for one map). "
                            "Otherwise this resolution in A.")
        group.addParam("matchAmplitudes", params.BooleanParam, default=True, condition="limitResolution",
                       expertLevel=LEVEL_ADVANCED, label="Classical shell amplitudes?",
                       help="Yes (default): each resolution shell of the output gets the strength it has in the "
                            "classical post-processed map (the half-map average FSC-weighted, sharpened by the "
                            "Guinier B-factor and low-passed at the resolution, measured inside the molecule): "
                            "the network decides where the density is, the data decide how strong each "
                            "resolution is. No: keep the network's own amplitudes, and the input data beyond the "
                            "resolution (damped).")
        group.addParam("nullCorrection", params.BooleanParam, default=True, expertLevel=LEVEL_ADVANCED,
                       label="Subtract the response to noise?",
                       help="Yes (default): subtract the network's response to pure noise (a faint fixed "
                            "pattern tied to the cube grid). No: keep it.")
        group.addParam("cpuFallback", params.BooleanParam, default=True, expertLevel=LEVEL_ADVANCED,
                       label="Fall back to CPU without GPU?",
                       help="Yes: when the GPU is asked for but none is available, run on the CPU. "
                            "No: refuse to run.")
        form.addParallelSection(threads=4, mpi=0)

    # ==================================================================================== INSERT steps
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep)
        self._insertFunctionStep(self.enhanceStep)
        self._insertFunctionStep(self.createOutputStep)

    # ==================================================================================== STEPS
    def convertInputStep(self):
        """MRC inputs are read in place; anything else is converted into this run's tmp folder."""
        for fn, target in zip(self._inputFileNames(), self._engineInputPaths()):
            if fn != target:
                from pwem.emlib.image import ImageHandler

                ImageHandler().convert(fn, target)

    def enhanceStep(self):
        errLog = self.getStderrLog()
        start = os.path.getsize(errLog) if os.path.exists(errLog) else 0
        try:
            self.runJob(Plugin.getProgram(), self.getEngineArgs(),
                        env=Plugin.getEnviron(tmpDir=self._getTmpPath()),
                        numberOfMpi=1, numberOfThreads=1)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(self._engineFailureMessage(exc.returncode, errLog, start)) from None

    def createOutputStep(self):
        vol = self._engineVolume(self.getOutputPath(), self._referenceVolume(), "output")
        halves = self._halfMapFileNames()
        if halves:
            vol.setHalfMaps(halves)
        self._storeProvenance()
        outputs = {"outputVolume": vol}
        if self.makesConfidence():
            outputs["outputConfidence"] = self._engineVolume(self.getConfidencePath(), vol, "confidence map")
        self._defineOutputs(**outputs)
        for pointer in self._inputPointers():
            for out in outputs.values():
                self._defineSourceRelation(pointer, out)

    @staticmethod
    def _engineVolume(fn, like, what):
        """A file the engine wrote, as a Volume with the sampling and origin of ``like``, whose dimensions
        it must have."""
        if not os.path.exists(fn):
            raise RuntimeError("DeepEMhancer finished without writing %s" % fn)
        vol = Volume()
        vol.setFileName(fn)
        vol.setSamplingRate(like.getSamplingRate())
        vol.setOrigin(like.getOrigin(force=True).clone())  # its own object: two outputs cannot share one
        if tuple(vol.getDim()) != tuple(like.getDim()):
            raise RuntimeError("DeepEMhancer %s %s has dimensions %s, input %s"
                               % (what, fn, vol.getDim(), like.getDim()))
        return vol

    def _storeProvenance(self):
        """Keep in the run what the engine's sidecar says: weights, half-map FSC-0.143, limit, FSC curve."""
        record = self.readSidecar()
        if record is None:
            raise RuntimeError("DeepEMhancer finished without writing %s" % self.getSidecarPath())
        weights = record.get("weights", {})
        self.weightsDescription.set("%s %s (SHA-256 %s)" % (weights.get("name"), weights.get("version") or "?",
                                                            (weights.get("sha256") or "?")[:SHA_PREFIX]))
        resolution = record.get("resolution", {})
        self.halfMapFsc0143.set(resolution.get("half_map_fsc0.143_A"))
        self.resolutionLimitUsed.set(resolution.get("limit_A"))
        if os.path.exists(self.getFscCurvePath()):
            self.fscCurveFile.set(self.getFscCurvePath())
        confidence = record.get("confidence") or {}
        self.confidenceTrusted.set(confidence.get("fraction_trusted"))
        self.confidenceThreshold.set(confidence.get("trusted_threshold"))
        self.confidenceContour.set(confidence.get("contour_level"))
        self._store(self.weightsDescription, self.halfMapFsc0143, self.resolutionLimitUsed, self.fscCurveFile,
                    self.confidenceTrusted, self.confidenceThreshold, self.confidenceContour)

    # ==================================================================================== INFO
    def _validate(self):
        errors = Plugin.validateInstallation()
        errors += self._validateInputs()
        if self.normalization.get() == NORM_STATS and not self.noiseStd.get() > 0:
            errors.append("Noise std must be positive, got %s." % self.noiseStd.get())
        if self.performCleaning and not 0 < self.cleaningStrength.get() < 1:
            errors.append("Cleaning strength must be between 0 and 1, got %s." % self.cleaningStrength.get())
        if self.batchSize.get() < 1:
            errors.append("Batch size must be at least 1, got %s." % self.batchSize.get())
        if not 1 <= self.stride.get() <= 64:
            errors.append("Stride must be between 1 and 64 voxels, got %s." % self.stride.get())
        if self.limitResolution and not self.resolutionLimit.get() >= 0:
            errors.append("Resolution must be 0 (automatic) or positive, got %s." % self.resolutionLimit.get())
        if self.numberOfThreads.get() < 1:
            errors.append("Threads must be at least 1, got %s." % self.numberOfThreads.get())
        errors += self._validateGpu()
        return errors

    def _warnings(self):
        warnings = []
        if self.usesGpu() and not self.useQueue() and self.cpuFallback and not gpusAvailable():
            warnings.append("No GPU is available here: DeepEMhancer will run on the CPU (slower).")
        return warnings

    def _summary(self):
        summary = []
        mode = "two half-maps" if self.useHalfMaps else "one map"
        summary.append("Input: %s. Model: %s. Normalization: %s."
                       % (mode, self.getModelName(), NORMALIZATIONS[self.normalization.get()]))
        if self.weightsDescription.get():
            summary.append("Weights: %s, this project's, trained on simulated data (not the original "
                           "DeepEMhancer's)." % self.weightsDescription.get())
        if self.performCleaning:
            summary.append("Small blobs removed (strength %s)." % self.cleaningStrength.get())
        if self.halfMapFsc0143.get() is not None:
            summary.append("Half-map FSC-0.143 (unmasked): %.2f A." % self.halfMapFsc0143.get())
        summary.append(self._limitSentence())
        if not self.nullCorrection:
            summary.append("The network's response to pure noise was kept (no null correction).")
        if self.confidenceTrusted.get() is not None and math.isfinite(self.confidenceTrusted.get()):  # NaN: no molecule
            summary.append("Confidence: %.0f%% of the molecule (enhanced density above %.4g) has confidence >= %g "
                           "(outputConfidence)." % (100 * self.confidenceTrusted.get(), self.confidenceContour.get(),
                                                    self.confidenceThreshold.get()))
        if self.hasAttribute("outputVolume"):
            out = self.outputVolume
            summary.append("Output: %s (%s px, %.3f A/px)."
                           % (stripFormat(out.getFileName()), "x".join(map(str, out.getDim() or ())),
                              out.getSamplingRate()))
        else:
            summary.append("Output not ready yet.")
        return summary

    def _limitSentence(self):
        """What the output keeps of the network: the figure used when the run has finished."""
        if not self.limitResolution:
            return "No resolution limit: the output keeps all the network adds."
        limit = self.resolutionLimitUsed.get() or (self.resolutionLimit.get() or None)
        if limit:
            how = "the half-map FSC-0.143" if not self.resolutionLimit.get() > 0 else "set by hand"
            if self.matchAmplitudes:
                return ("Output limited to %.2f A (%s), with the shell amplitudes of the classical sharpened map."
                        % (limit, how))
            return "Output limited to %.2f A (%s): the data beyond it are kept, damped." % (limit, how)
        if self.useHalfMaps:
            return "Output limited to the half-map FSC-0.143 resolution."
        return "No resolution limit (one map and no resolution given)."

    def _methods(self):
        if not self.hasAttribute("outputVolume"):
            return []
        text = ("The map %s was post-processed from %s with a PyTorch re-implementation of the DeepEMhancer "
                "method [SanchezGarcia2021] (scipion-em-deepemhancer engine %s, %s normalization), using "
                "network weights %s trained on simulated data by that project, not the weights published "
                "with the method. "
                % (self.getObjectTag(self._inputPointers()[0].get()),
                   "two half-maps" if self.useHalfMaps else "a single map", ENGINE_VERSION,
                   NORMALIZATIONS[self.normalization.get()].lower(),
                   self.weightsDescription.get() or self.getModelName()))
        limit = self.resolutionLimitUsed.get()
        if self.limitResolution and limit:
            text += ("The network's output was kept up to %.2f A (%s) and %s. "
                     % (limit, "the unmasked half-map FSC-0.143" if not self.resolutionLimit.get() > 0
                        else "a resolution set by hand",
                        "given, shell by shell, the Fourier amplitudes of the classical post-processed map "
                        "(%s, Guinier-sharpened, low-passed there)"
                        % ("the half-map average FSC-weighted" if self.useHalfMaps else "the map")
                        if self.matchAmplitudes else "the input data beyond it"))
        else:
            text += "The network's output was kept at all resolutions. "
        text += ("The network's response to pure noise was %s. The result is %s."
                 % ("subtracted" if self.nullCorrection else "kept", self.getObjectTag("outputVolume")))
        if self.confidenceTrusted.get() is not None and self.hasAttribute("outputConfidence"):
            text += (" A per-voxel confidence map %s (local agreement of the two half-maps enhanced "
                     "independently, calibrated against noise) gives %.0f%% of the molecule a confidence of at "
                     "least %g." % (self.getObjectTag("outputConfidence"), 100 * self.confidenceTrusted.get(),
                                    self.confidenceThreshold.get()))
        return [text]

    def _citations(self):
        return ["SanchezGarcia2021"]

    # ==================================================================================== UTILS
    def getOutputPath(self):
        return os.path.abspath(self._getExtraPath(OUTPUT_MAP))

    def getConfidencePath(self):
        return os.path.abspath(self._getExtraPath(OUTPUT_CONFIDENCE))

    def makesConfidence(self):
        return bool(self.useHalfMaps and self.computeConfidence)

    def getSidecarPath(self):
        return os.path.abspath(self._getExtraPath(OUTPUT_SIDECAR))

    def getFscCurvePath(self):
        return os.path.abspath(self._getExtraPath(OUTPUT_FSC))

    def readSidecar(self):
        """The engine's provenance record of the output (dict), None before it exists."""
        try:
            with open(self.getSidecarPath()) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def getModelName(self):
        if self.normalization.get() == NORM_MASK:
            return "maskNormalized"
        return MODEL_TYPES[self.modelType.get()]

    def getDeviceArgs(self):
        """['--device', ...] (+ ['-g', ids]) from useGpu/gpuList/cpuFallback."""
        if not self.usesGpu():
            return ["--device", "cpu"]
        args = ["--device", "auto" if self.cpuFallback else "cuda"]
        gpus = [str(g) for g in self.getGpuList()]
        if gpus:
            args += ["-g", ",".join(gpus)]
        return args

    def getEngineArgList(self):
        """The engine's argv (without the program), from the parameters only."""
        inputs = self._engineInputPaths()
        args = ["-i", inputs[0]]
        if len(inputs) == 2:
            args += ["-i2", inputs[1]]
        args += ["-o", self.getOutputPath(), "-s", "%g" % self._referenceVolume().getSamplingRate()]
        if self.makesConfidence():
            args += ["--confidence", self.getConfidencePath()]
        norm = self.normalization.get()
        if norm == NORM_MASK:
            args += ["-m", self._maskPath()]
        else:
            args += ["-p", MODEL_TYPES[self.modelType.get()]]
            if norm == NORM_STATS:
                args += ["--noiseStats", "%g" % self.noiseMean.get(), "%g" % self.noiseStd.get()]
        if self.performCleaning:
            args += ["--cleaningStrength", "%g" % self.cleaningStrength.get()]
        if not self.limitResolution:
            args += ["--no-resolution-limit"]
        elif self.resolutionLimit.get() > 0:
            args += ["--resolution", "%g" % self.resolutionLimit.get()]
        if self.limitResolution and not self.matchAmplitudes:
            args += ["--no-match-amplitudes"]
        if not self.nullCorrection:
            args += ["--no-null-correction"]
        args += ["-b", str(self.batchSize.get()), "--stride", str(self.stride.get()),
                 "--blend", BLEND_MODES[self.blending.get()]]
        if self.lattice.get() != LATTICE_AUTO:
            args += ["--lattice", LATTICES[self.lattice.get()]]
        args += ["--threads", str(max(1, self.numberOfThreads.get()))]
        args += self.getDeviceArgs()
        args += ["--force"]  # a re-run (continue/restart) overwrites a previous attempt
        return args

    def getEngineArgs(self):
        """getEngineArgList() as one shell-quoted string (what runJob expects)."""
        import shlex

        return " ".join(shlex.quote(a) for a in self.getEngineArgList())

    def _inputPointers(self):
        if self.useHalfMaps and not self.halfMapsAttached:
            return [self.inputHalf1, self.inputHalf2]
        return [self.inputVolume]

    def _referenceVolume(self):
        """The volume whose sampling, dimensions and origin the output takes."""
        return self._inputPointers()[0].get()

    def _halfMapFileNames(self):
        if not self.useHalfMaps:
            return []
        if self.halfMapsAttached:
            vol = self.inputVolume.get()
            return [f.strip() for f in vol.getHalfMaps().split(",")] if vol and vol.hasHalfMaps() else []
        return [p.get().getFileName() for p in (self.inputHalf1, self.inputHalf2) if p.get() is not None]

    def _inputFileNames(self):
        """Absolute paths of the maps given to the engine (1 or 2), before any conversion."""
        if self.useHalfMaps:
            names = self._halfMapFileNames()
        else:
            names = [self.inputVolume.get().getFileName()]
        return [os.path.abspath(stripFormat(fn)) for fn in names]

    def _engineInputPaths(self):
        paths = []
        for i, fn in enumerate(self._inputFileNames(), start=1):
            if fn.lower().endswith(MRC_EXTENSIONS):
                paths.append(fn)
            else:
                paths.append(os.path.abspath(self._getTmpPath("input_%d.mrc" % i)))
        return paths

    def _maskPath(self):
        fn = os.path.abspath(stripFormat(self.inputMask.get().getFileName()))
        return fn

    def _engineFailureMessage(self, returncode, errLog, start):
        """'DeepEMhancer failed (exit 2, bad input): error: <engine line>' from this attempt's stderr."""
        reason = ""
        for log in (errLog, self.getStdoutLog()):
            if not os.path.exists(log):
                continue
            with open(log, errors="replace") as f:
                if log == errLog:
                    f.seek(start)
                lines = [ln.strip() for ln in f.read().splitlines()]
            found = [ln[ln.index(ENGINE_ERROR_PREFIX):] for ln in lines if ENGINE_ERROR_PREFIX in ln
                     and re.match(r"^(\x1b\[[0-9;]*m)?\s*%s" % ENGINE_ERROR_PREFIX, ln)]
            if found:
                reason = found[-1]
                break
        meaning = EXIT_MEANINGS.get(returncode)
        head = "DeepEMhancer failed (exit %s%s)" % (returncode, ", " + meaning if meaning else "")
        return "%s: %s" % (head, reason) if reason else "%s; see the run log for details." % head

    def _validateInputs(self):
        """Missing inputs, half-maps or mask that do not match (dimensions, sampling)."""
        errors = []
        if self.useHalfMaps and not self.halfMapsAttached:
            if self.inputHalf1.get() is None or self.inputHalf2.get() is None:
                return ["Both half-maps (inputHalf1, inputHalf2) are needed with 'two half-maps'."]
            h1, h2 = self.inputHalf1.get(), self.inputHalf2.get()
            d1, d2 = h1.getDim(), h2.getDim()
            if d1 != d2:
                errors.append("The half-maps have different dimensions: %s is %s px, %s is %s px."
                              % (stripFormat(h1.getFileName()), _fmtDim(d1),
                                 stripFormat(h2.getFileName()), _fmtDim(d2)))
            s1, s2 = h1.getSamplingRate(), h2.getSamplingRate()
            if abs(s1 - s2) > SAMPLING_RTOL * max(s1, s2):
                errors.append("The half-maps have different sampling rates: %s has %.4f A/px, %s has %.4f A/px."
                              % (stripFormat(h1.getFileName()), s1, stripFormat(h2.getFileName()), s2))
            o1, o2 = (h.getOrigin(force=True).getShifts() for h in (h1, h2))
            if max(abs(a - b) for a, b in zip(o1, o2)) > 0.01:
                errors.append("The half-maps have different origins: %s (%s A) and %s (%s A)."
                              % (stripFormat(h1.getFileName()), _fmtVec(o1),
                                 stripFormat(h2.getFileName()), _fmtVec(o2)))
        else:
            vol = self.inputVolume.get()
            if vol is None:
                return ["The input map (inputVolume) is missing."]
            if self.useHalfMaps and not vol.hasHalfMaps():
                return ["The volume %s has no half-maps attached: set 'Half-maps attached to a volume?' to No "
                        "and give Half-map 1 and 2 (two-half-maps mode), or set 'Input: two half-maps?' to No "
                        "to enhance this one map." % stripFormat(vol.getFileName())]
        if self.normalization.get() == NORM_MASK:
            mask = self.inputMask.get()
            if mask is None:
                errors.append("Mask normalization needs a mask (inputMask).")
            else:
                ref = self._referenceVolume()
                dm, dr = mask.getDim(), ref.getDim()
                if dm != dr:
                    errors.append("The mask %s is %s px but the input map %s is %s px."
                                  % (stripFormat(mask.getFileName()), _fmtDim(dm),
                                     stripFormat(ref.getFileName()), _fmtDim(dr)))
        return errors

    def _validateGpu(self):
        if self.usesGpu() and len(self.getGpuList()) > 1:
            return ["DeepEMhancer runs on one GPU: give one GPU ID, not %s." % self.gpuList.get()]
        if not self.usesGpu() or self.useQueue():
            return []  # CPU asked, or the GPU lives on a queue node we cannot inspect from here
        available = gpusAvailable()
        if not available:
            if self.cpuFallback:
                return []
            return ["A GPU was asked for (GPU IDs %s) but none is available here (CUDA_VISIBLE_DEVICES=%s): "
                    "choose 'Use GPU: No', or allow the CPU fallback."
                    % (self.gpuList.get(), os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))]
        bad = [g for g in self.getGpuList() if g >= available]
        if bad:
            return ["GPU IDs %s are not available: only %d GPU(s) visible." % (bad, available)]
        return []


def _fmtDim(dim):
    return "x".join(str(d) for d in dim) if dim else "unknown"


def _fmtVec(values):
    return ", ".join("%g" % v for v in values)


def gpusAvailable():
    """Number of NVIDIA GPUs visible to a job started from here (honours CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() not in ("-1", "NoDevFiles")]
        if not ids:
            return 0
    count = 0
    gpuDir = "/proc/driver/nvidia/gpus"
    if os.path.isdir(gpuDir):
        count = len(os.listdir(gpuDir))
    elif shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            count = sum(1 for ln in out.splitlines() if ln.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            count = 0
    if visible is not None and count:
        count = min(count, len(ids))
    return count
