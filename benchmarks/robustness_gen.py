"""Half-map pairs for the robustness sweep, made apart from the training simulator.

The training pairs (``deepemhancer_engine/training/simulate.py``) carry noise whose power *falls* with
frequency (a power law times a B envelope) and the evaluation noise grid (``noisegen.py``) has four fixed
shapes of its own; neither is used here, so the sweep does not test the network on its own training
distribution. A pair is

* signal: the model map of an atomic model (:func:`deepemhancer_engine.modelmap.model_map`, the atoms' own B)
  blurred by a global B-factor (``Setting.bfactor``, A^2);
* noise: per half an independent Gaussian realisation with the radial power spectrum ``P(s)`` of one of
  :data:`NOISE_COLOURS` (s in 1/A, reference frequency ``S_REF`` = 1/10 A):

  - ``white``: 1;
  - ``rise_k1``: ``s / S_REF`` (power rising like s);
  - ``rise_k2``: ``(s / S_REF)^2``, no roll-off (an unregularised reconstruction at a fine pixel size);
  - ``relion``: ``rise_k2`` times a Butterworth roll-off ``1 / (1 + (s / s_k)^8)`` with the knee
    ``s_k = ROLLOFF_KNEE / d`` just beyond the resolution ``d`` (a regularised reconstruction);
  - ``fall_k1``: ``S_REF / (s + S_FLOOR)`` (power falling like 1/s);
  - ``pink_bump``: ``fall_k1`` times ``1 + BUMP_HEIGHT * exp(-(s - BUMP_AT)^2 / (2 BUMP_WIDTH^2))`` (a
    band of extra noise around 6 A, as left by a mis-weighted shell range);

  scaled so that the expected half-map FSC is 0.143 at the target resolution ``d``
  (``FSC = S / (S + N)`` with S the signal's and N one half's noise power in the shell at 1/d);
* then, as depositors and other programs hand maps over: both halves multiplied by a soft mask around the
  molecule (``Setting.masked``: atoms dilated by ``MASK_RADIUS`` A with a ``MASK_EDGE`` A cosine edge,
  :func:`modelmap.model_mask`), then by ``Setting.scale`` with ``Setting.offset_sd`` standard deviations
  of the scaled half 1 added to both.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import scipy.fft

from deepemhancer_engine.fourier import frequency_grid
from deepemhancer_engine.io import GridInfo
from deepemhancer_engine.modelmap import model_geometry_box, model_map, model_mask, read_model

NOISE_COLOURS = ("white", "rise_k1", "rise_k2", "relion", "fall_k1", "pink_bump")
#: Reference frequency (1/A) of the power laws, and the floor that keeps ``fall_k1`` finite at s = 0.
S_REF, S_FLOOR = 0.1, 0.02
#: ``relion``: the roll-off's knee in units of 1/d (just beyond the resolution).
ROLLOFF_KNEE = 1.25
#: ``pink_bump``: centre (1/A), width (1/A) and height of the bump over the 1/s background.
BUMP_AT, BUMP_WIDTH, BUMP_HEIGHT = 1.0 / 6.0, 0.02, 4.0
#: Half-map FSC the noise level is set for, at the target resolution.
FSC_TARGET = 0.143
#: Depositor-style soft mask: atoms dilated by this radius (A), cosine edge (A).
MASK_RADIUS, MASK_EDGE = 4.0, 6.0
#: Solvent margin (A) around the atoms on each side of the box.
MARGIN = 12.0
#: Target resolution (A): this, or ``PIXELS_PER_RESOLUTION`` voxels for coarse pixels.
TARGET_RESOLUTION, PIXELS_PER_RESOLUTION = 4.5, 2.5


@dataclasses.dataclass(frozen=True)
class Setting:
    """One cell of the sweep: how both halves of every pair in it are made."""

    noise: str = "white"
    bfactor: float = 70.0
    voxel: float = 1.0
    scale: float = 1.0
    offset_sd: float = 0.0
    masked: bool = False

    def __post_init__(self) -> None:
        if self.noise not in NOISE_COLOURS:
            raise ValueError(f"unknown noise colour {self.noise!r}; choose one of {', '.join(NOISE_COLOURS)}")
        if not (self.voxel > 0 and self.scale > 0 and self.bfactor >= 0):
            raise ValueError(f"voxel size and scale must be positive and B not negative: {self}")

    @property
    def resolution(self) -> float:
        """Target half-map FSC-0.143 resolution (A) of the cell."""
        return max(TARGET_RESOLUTION, PIXELS_PER_RESOLUTION * self.voxel)

    def key(self) -> str:
        """A stable text key (the per-case cache's)."""
        return (f"{self.noise}|B{self.bfactor:g}|px{self.voxel:g}|x{self.scale:g}{self.offset_sd:+g}sd|"
                f"{'masked' if self.masked else 'unmasked'}")


@dataclasses.dataclass
class Pair:
    """Two half maps on ``grid`` and the atomic model they come from."""

    half1: np.ndarray
    half2: np.ndarray
    grid: GridInfo
    structure: object  # gemmi.Structure
    signal: np.ndarray  # noise-free, blurred, before mask / scale / offset
    noise_std: float  # real-space standard deviation of each half's noise, before mask / scale / offset


def noise_power(colour: str, s: np.ndarray, resolution: float) -> np.ndarray:
    """Radial power ``P(s)`` of ``colour`` at frequencies ``s`` (1/A); ``resolution`` (A) places the roll-off
    of ``relion``. Example: ``noise_power("rise_k2", np.array([0.1, 0.2]), 4.5)`` is ``[1, 4]``."""
    s = np.asarray(s, dtype=np.float64)
    if colour == "white":
        return np.ones_like(s)
    if colour == "rise_k1":
        return s / S_REF
    if colour in ("rise_k2", "relion"):
        power = (s / S_REF) ** 2
        return power / (1.0 + (s * resolution / ROLLOFF_KNEE) ** 8) if colour == "relion" else power
    falling = S_REF / (s + S_FLOOR)
    if colour == "fall_k1":
        return falling
    if colour == "pink_bump":
        return falling * (1.0 + BUMP_HEIGHT * np.exp(-0.5 * ((s - BUMP_AT) / BUMP_WIDTH) ** 2))
    raise ValueError(f"unknown noise colour {colour!r}; choose one of {', '.join(NOISE_COLOURS)}")


def coloured_noise(shape, voxel_size, colour: str, rng: np.random.Generator, resolution: float) -> np.ndarray:
    """Zero-mean Gaussian noise ``[z, y, x]`` float32 with radial power ``noise_power(colour, s)``, unit
    real-space standard deviation."""
    s = frequency_grid(shape, voxel_size)
    ft = scipy.fft.rfftn(rng.standard_normal(shape)) * np.sqrt(noise_power(colour, s, resolution))
    ft[0, 0, 0] = 0.0
    out = scipy.fft.irfftn(ft, s=shape)
    return (out / out.std()).astype(np.float32)


def band_power(volume: np.ndarray, voxel_size, s0: float) -> float:
    """Mean Fourier power of ``volume`` in the shell of one box-frequency width around ``s0`` (1/A)."""
    s = frequency_grid(volume.shape, voxel_size)
    width = 1.0 / min(n * v for n, v in zip(volume.shape[::-1], voxel_size))
    band = np.abs(s - s0) <= width
    return float(np.mean(np.abs(scipy.fft.rfftn(volume)[band]) ** 2))


def noise_scale(signal: np.ndarray, noise: np.ndarray, voxel_size, resolution: float) -> float:
    """Factor for ``noise`` (one half's) that makes the expected half-map FSC ``FSC_TARGET`` at ``resolution``."""
    s0 = 1.0 / resolution
    wanted = band_power(signal, voxel_size, s0) * (1.0 - FSC_TARGET) / FSC_TARGET
    return float(np.sqrt(wanted / band_power(noise, voxel_size, s0)))


def case_grid(structure, voxel: float) -> GridInfo:
    """The box of a case: the atoms plus :data:`MARGIN` A on every side, cubic, even edge."""
    box = model_geometry_box(structure, voxel, margin=MARGIN)
    n = max(box.shape)
    centre = np.asarray(box.origin) + 0.5 * voxel * np.asarray(box.shape[::-1])
    origin = tuple(float(c - 0.5 * n * voxel) for c in centre)
    return GridInfo(shape=(n, n, n), voxel_size=(voxel,) * 3, origin=origin)


def make_pair(model: str | Path, setting: Setting, seed: int) -> Pair:
    """Two half maps of ``model`` made as ``setting`` says; the two noise realisations come from ``seed`` and
    ``seed + 1`` (the same seed in every cell: cells of one structure differ only by their setting)."""
    st = read_model(model)
    grid = case_grid(st, setting.voxel)
    vs = grid.voxel_size
    signal = model_map(st, grid, blur=setting.bfactor)
    noises = [coloured_noise(grid.shape, vs, setting.noise, np.random.default_rng(seed + i), setting.resolution)
              for i in (0, 1)]
    k = noise_scale(signal, noises[0], vs, setting.resolution)
    halves = [signal + k * n for n in noises]
    if setting.masked:
        mask = model_mask(st, grid, MASK_RADIUS, soft_edge=MASK_EDGE)
        halves = [h * mask for h in halves]
    offset = setting.offset_sd * setting.scale * float(halves[0].std())
    half1, half2 = ((h * setting.scale + offset).astype(np.float32) for h in halves)
    return Pair(half1, half2, grid, st, signal, k)
