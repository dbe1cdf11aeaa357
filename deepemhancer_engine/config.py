"""Frozen configuration dataclasses, one per pipeline stage, and the option enums.

Every value is validated in ``__post_init__`` with a message that quotes it, so a bad option fails
before any file is read. Library functions take these objects keyword-only.
"""

from __future__ import annotations

import difflib
import enum
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import InputError

#: Edge of the cubes the network sees (voxels at 1 A/voxel), as in the paper.
TILE_SIZE = 64
#: Default distance between cube starts. The original uses 16 on a cubic grid (64 cubes per voxel); the
#: default runs half the cubes of a stride-32 grid in a face-centred cubic lattice (:class:`Lattice`),
#: because evenly spread cubes stay close to the original's average with a tenth of its cubes
#: (docs/design.md, "Cube lattice").
DEFAULT_STRIDE = 32
#: Voxel size the networks were trained at (A/voxel).
WORKING_VOXEL_SIZE = 1.0
#: Standard deviation of the solvent noise after normalisation (paper: mean 0, std 0.1).
NOISE_TARGET_STD = 0.1


class ModelName(str, enum.Enum):
    """Named models, spelled as in the original DeepEMhancer (``-p``)."""

    TIGHT = "tightTarget"
    WIDE = "wideTarget"
    HIGHRES = "highRes"
    MASKED = "maskNormalized"

    def __str__(self) -> str:
        return self.value


class NormMode(str, enum.Enum):
    """How the input is brought to noise mean 0 / std 0.1."""

    AUTO = "auto"  # estimate the noise outside the molecule
    STATS = "stats"  # --noiseStats MEAN STD
    MASK = "mask"  # -m MASK, with the mask-normalised model

    def __str__(self) -> str:
        return self.value


class BlendMode(str, enum.Enum):
    """How overlapping cubes are combined."""

    GAUSSIAN = "gaussian"
    CONSTANT = "constant"  # uniform averaging, like the original

    def __str__(self) -> str:
        return self.value


class Lattice(str, enum.Enum):
    """Which cubes of the grid of starts are run.

    CUBIC: every cube (the original). FCC: a face-centred cubic lattice, the cubes whose three grid
    indices add up to an even number (a 3-D checkerboard) plus the grid's corner cubes: half the cubes,
    and with a stride of at most half the cube every voxel still lies in at least one cube.
    """

    FCC = "fcc"
    CUBIC = "cubic"

    def __str__(self) -> str:
        return self.value


class ConditionMode(str, enum.Enum):
    """What the network sees of the data beyond their resolution ``d`` (docs/design.md, "Conditioning").

    LOWPASS: the input is low-passed at ``d`` (a raised cosine from ``1 / d`` to ``1.1 / d``) before the noise
    is measured and the map normalised. FSCWEIGHT: the half-map FSC weighting ``sqrt(2 FSC / (1 + FSC))``,
    then the same low-pass (half maps only; a single map gets LOWPASS). NONE: the data as they are.
    Without a resolution (a single map, no ``--resolution``) nothing is filtered.
    """

    LOWPASS = "lowpass"
    FSCWEIGHT = "fscweight"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


def parse_option(enum_cls: type[enum.Enum], value: object, what: str) -> enum.Enum:
    """Return the member of ``enum_cls`` named by ``value`` or raise a "did you mean" InputError."""
    if isinstance(value, enum_cls):
        return value
    text = str(value)
    for member in enum_cls:
        if text == member.value or text.lower() == member.value.lower():
            return member
    valid = [m.value for m in enum_cls]
    close = difflib.get_close_matches(text, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise InputError(f"invalid {what} {text!r}: choose one of {', '.join(valid)}{hint}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise InputError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class NormalizationConfig:
    """Input normalisation. ``noise_mean``/``noise_std`` only with STATS; ``mask`` only with MASK."""

    mode: NormMode = NormMode.AUTO
    noise_mean: float | None = None
    noise_std: float | None = None
    mask: Path | None = None
    target_std: float = NOISE_TARGET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", parse_option(NormMode, self.mode, "normalisation mode"))
        if self.mode is NormMode.STATS:
            if self.noise_mean is None or self.noise_std is None:
                raise InputError("noise statistics mode needs both a mean and a standard deviation")
            _positive("noise standard deviation (--noiseStats)", self.noise_std)
        if self.mode is NormMode.MASK and self.mask is None:
            raise InputError("mask normalisation needs a mask file (-m MASK)")
        _positive("target noise std", self.target_std)


@dataclass(frozen=True)
class TilingConfig:
    """Cube size, distance between cube starts, how overlaps are blended, and which cubes run.

    ``lattice`` None picks :attr:`Lattice.FCC` for Gaussian blending with a stride of at most half the
    cube (the default), :attr:`Lattice.CUBIC` otherwise (``--blend constant --stride 16`` is the
    original's setting, cube for cube); see :attr:`cube_lattice`.
    """

    tile: int = TILE_SIZE
    stride: int = DEFAULT_STRIDE
    blend: BlendMode = BlendMode.GAUSSIAN
    lattice: Lattice | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "blend", parse_option(BlendMode, self.blend, "blend mode"))
        if self.lattice is not None:
            object.__setattr__(self, "lattice", parse_option(Lattice, self.lattice, "cube lattice"))
        if int(self.tile) != self.tile or self.tile < 8:
            raise InputError(f"cube size must be an integer of at least 8, got {self.tile!r}")
        if int(self.stride) != self.stride or not 1 <= self.stride <= self.tile:
            raise InputError(
                f"stride must be an integer between 1 and the cube size {self.tile}, got {self.stride!r}"
            )
        if self.lattice is Lattice.FCC and 2 * self.stride > self.tile:
            raise InputError(
                f"the fcc lattice needs a stride of at most half the cube size ({self.tile // 2}), got {self.stride}"
            )

    @property
    def cube_lattice(self) -> Lattice:
        """The lattice used: ``lattice``, or when None, FCC for Gaussian blending with ``2 stride <= tile``."""
        if self.lattice is not None:
            return self.lattice  # type: ignore[return-value]
        fcc = self.blend is BlendMode.GAUSSIAN and 2 * self.stride <= self.tile
        return Lattice.FCC if fcc else Lattice.CUBIC


@dataclass(frozen=True)
class InferenceConfig:
    """Where and how the network runs.

    ``amp``: the precision of the network: ``auto`` (fp16 autocast on a GPU; bf16 autocast on CPUs that
    compute bf16 natively, fp32 on other CPUs), ``off`` (fp32), ``fp16`` or ``bf16``. ``channels_last``:
    the channels-last-3d memory layout; None: on exactly for bf16 on CPU (see :class:`runner.NetworkRunner`).
    """

    device: str = "auto"  # auto | cpu | cuda
    gpu_ids: tuple[int, ...] = ()
    batch_size: int | None = None  # None: 8 on CPU, from the free memory on a GPU
    null_correction: bool = True  # subtract the network's response to pure noise (nullresponse.NullCorrection)
    amp: str = "auto"  # auto | off | fp16 | bf16
    channels_last: bool | None = None  # None: automatic
    #: Skip the cubes that hold no molecule (outside the mask, or far from the molecule the map shows; their
    #: output is 0). False runs every cube: pure-noise checks and the original's behaviour (``--no-skip``).
    skip_solvent: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"invalid device {self.device!r}: choose one of auto, cpu, cuda")
        if not isinstance(self.amp, str) or self.amp not in ("auto", "off", "fp16", "bf16"):
            raise InputError(f"invalid mixed precision {self.amp!r}: choose one of auto, off, fp16, bf16")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise InputError(f"channels-last must be true, false or unset (automatic), got {self.channels_last!r}")
        if self.batch_size is not None and (int(self.batch_size) != self.batch_size or self.batch_size < 1):
            raise InputError(f"batch size must be a positive integer, got {self.batch_size!r}")
        object.__setattr__(self, "gpu_ids", tuple(int(g) for g in self.gpu_ids))
        if any(g < 0 for g in self.gpu_ids):
            raise InputError(f"GPU ids must be non-negative, got {list(self.gpu_ids)}")


@dataclass(frozen=True)
class EnhanceConfig:
    """Everything one enhancement run needs besides the input maps."""

    model: ModelName = ModelName.TIGHT
    weights: Path | None = None  # overrides the registry
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    cleaning_strength: float | None = None  # None or <= 0: off
    working_voxel_size: float = WORKING_VOXEL_SIZE
    #: Resolution limit (A) of the output (postprocess.limit_resolution). None: the half-map FSC-0.143
    #: resolution when two half maps are given, no limit for a single map.
    resolution: float | None = None
    limit_resolution: bool = True  # False: keep everything the network returns (--no-resolution-limit)
    #: What the network sees of the data beyond the resolution (:class:`ConditionMode`, ``--condition``).
    condition: ConditionMode = ConditionMode.LOWPASS
    #: Beyond the resolution limit, put the data back only inside the molecule's envelope (the solvent keeps
    #: no speckle); False: over the whole box (``--no-solvent-envelope``).
    solvent_envelope: bool = True
    #: With a resolution limit, give the output the shell amplitudes of the classical map (the average FSC-weighted
    #: when half maps give a curve, Guinier-sharpened and low-passed at the limit, as RELION's post-processing):
    #: the network sets the density, the data set how strong each shell is (:func:`postprocess.match_amplitudes`;
    #: ``--no-match-amplitudes``).
    match_amplitudes: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", parse_option(ModelName, self.model, "model"))
        object.__setattr__(self, "condition", parse_option(ConditionMode, self.condition, "conditioning"))
        _positive("working voxel size", self.working_voxel_size)
        if self.resolution is not None:
            _positive("resolution (--resolution)", self.resolution)
        if self.cleaning_strength is not None and self.cleaning_strength > 1:
            raise InputError(
                f"cleaning strength must be between 0 and 1, got {self.cleaning_strength!r}"
            )

    def every_cube(self) -> EnhanceConfig:
        """This configuration with solvent-cube skipping off, for pure-noise inputs (no molecule: skipping
        would leave the network out and a noise check would pass by construction)."""
        return replace(self, inference=replace(self.inference, skip_solvent=False))
