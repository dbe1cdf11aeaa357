"""Data versions of the training simulator, and the per-pair draws of ``sim2``.

``sim1`` is the data the shipped weights were trained on (:func:`simulate.simulate_pair`'s default, kept
bit-identical so results made with those weights stay reproducible). ``sim2`` widens it to the inputs users
hand over (docs/design.md, "Training data variety (sim2)"); per pair it draws

* a noise family, shared by both halves: ``falling`` (sim1's power law times a B envelope), ``flat`` (white
  with a slight random linear tilt of the amplitude over the band) or ``rising`` (amplitude ``(s + s0)^alpha``,
  a random power law), each in half of the pairs with a regularisation roll-off near Nyquist: a half-Gaussian
  shoulder, 1 up to a random knee and ``exp(-(s - knee)^2 / (2 w^2))`` beyond. The evaluation's generators
  (``noisegen.py``: Lorentzian, white, ``sqrt(1 + (s/s_r)^2)``, raised-cosine roll-off;
  ``benchmarks/robustness_gen.py``: fixed integer power laws, Butterworth roll-off, a 6 A bump) use other shapes,
  so a held-out noise test is never the training distribution;
* a voxel size of 0.5-2.5 A (at most the resolution / 2.2);
* in 30 % of pairs an anisotropic blur ``exp(-B_aniso (s . n)^2 / 4)`` along a random axis ``n``;
* in 25 % of pairs a depositor's soft mask (the atoms dilated, or a sphere, with a cosine edge) on both halves;
* a scale (log-uniform 1e-3-1e3) and an offset (up to 5 times the molecule's rms) of both halves together.

:func:`draw` makes every draw in a fixed order whatever the outcome, so forcing one of them (tests) leaves the
others as the seed made them.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..atoms import Atoms, atom_mask, voxel_indices
from ..config import parse_option
from ..errors import InputError
from ..fourier import axis_frequencies, cosine_edge


class DataVariety(str, enum.Enum):
    """Which simulator version makes a pair (``--variety``)."""

    SIM1 = "sim1"
    SIM2 = "sim2"

    def __str__(self) -> str:
        return self.value


def parse_variety(value: object) -> DataVariety:
    """The :class:`DataVariety` named by ``value`` (one-line "did you mean" InputError otherwise)."""
    return parse_option(DataVariety, value, "data variety (--variety)")  # type: ignore[return-value]


NOISE_FAMILIES = ("falling", "flat", "rising")
MASK_KINDS = ("model", "sphere")
#: Voxel sizes (A) of sim2, and the coarsest voxel for a resolution: resolution / VOXELS_PER_RESOLUTION.
VOXEL_RANGE = (0.5, 2.5)
VOXELS_PER_RESOLUTION = 2.2
#: Shares of the pairs with a roll-off, an anisotropic blur and a depositor's mask.
P_ROLLOFF, P_ANISOTROPIC, P_MASK = 0.5, 0.3, 0.25
#: Largest extra directional B (A^2).
ANISOTROPIC_B_MAX = 150.0
#: Scale range of both halves, and the largest offset in units of the molecule's rms.
SCALE_RANGE = (1e-3, 1e3)
OFFSET_MAX = 5.0
#: For a model larger than the box, solvent per side at most this share of the largest box (0.5 A voxels make a
#: 72 A box).
PAD_SHARE = 0.15
_FORCEABLE = ("noise", "rolloff", "anisotropic", "mask", "scale", "offset")


@dataclass(frozen=True)
class Sim2Draws:
    """What sim2 drew for one pair (parameters of switched-off features are kept but unused)."""

    noise: str
    falling: tuple[float, float]  # beta (amplitude ~ (s + 0.02)^-beta), B envelope (A^2)
    flat_tilt: float  # amplitude 1 + tilt (s / s_nyq - 1/2)
    rising: tuple[float, float]  # alpha (amplitude ~ (s + s0)^alpha), s0 (1/A)
    rolloff: bool
    rolloff_shape: tuple[float, float]  # knee and Gaussian width, as fractions of Nyquist
    anisotropic: bool
    anisotropic_b: float  # A^2
    axis: tuple[float, float, float]  # unit vector (x, y, z)
    mask: str | None  # None, "model" or "sphere"
    mask_shape: tuple[float, float]  # dilation beyond the atoms / the farthest atom (A), cosine edge (A)
    scale: float
    offset: float  # in units of the molecule's rms (after masking, before scaling)

    def info(self) -> dict[str, Any]:
        """The draws as JSON-friendly values (the pair's ``info["sim2"]``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def draw(rng: np.random.Generator, force: dict[str, Any] | None = None) -> Sim2Draws:
    """One pair's draws (see the module docstring); ``force`` fixes some of them: ``noise`` (a family),
    ``rolloff`` / ``anisotropic`` (bool), ``mask`` (None, "model", "sphere"), ``scale``, ``offset``."""
    family = NOISE_FAMILIES[int(rng.integers(len(NOISE_FAMILIES)))]
    falling = (rng.uniform(0.2, 0.8), rng.uniform(0.0, 40.0))
    tilt = rng.uniform(-0.2, 0.2)
    rising = (rng.uniform(0.3, 1.2), rng.uniform(0.01, 0.05))
    rolloff = rng.random() < P_ROLLOFF
    rolloff_shape = (rng.uniform(0.5, 0.85), rng.uniform(0.05, 0.2))
    aniso = rng.random() < P_ANISOTROPIC
    aniso_b = rng.uniform(0.0, ANISOTROPIC_B_MAX)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    masked = rng.random() < P_MASK
    kind = MASK_KINDS[int(rng.integers(len(MASK_KINDS)))]
    mask_shape = (rng.uniform(1.0, 4.0), rng.uniform(3.0, 8.0))
    scale = float(np.exp(rng.uniform(*np.log(SCALE_RANGE))))
    offset = rng.uniform(-OFFSET_MAX, OFFSET_MAX)
    drawn = Sim2Draws(family, _floats(falling), float(tilt), _floats(rising), bool(rolloff), _floats(rolloff_shape),
                      bool(aniso), float(aniso_b), _floats(axis), kind if masked else None, _floats(mask_shape),
                      scale, float(offset))
    return _forced(drawn, force or {})


def _floats(values) -> tuple:
    return tuple(float(v) for v in values)


def _forced(drawn: Sim2Draws, force: dict[str, Any]) -> Sim2Draws:
    unknown = sorted(set(force) - set(_FORCEABLE))
    if unknown:
        raise InputError(f"cannot force sim2 draw(s) {', '.join(unknown)}; choose from {', '.join(_FORCEABLE)}")
    if force.get("noise", drawn.noise) not in NOISE_FAMILIES:
        raise InputError(f"unknown noise family {force['noise']!r}; choose one of {', '.join(NOISE_FAMILIES)}")
    if force.get("mask", drawn.mask) not in (None, *MASK_KINDS):
        raise InputError(f"unknown mask kind {force['mask']!r}; choose None or one of {', '.join(MASK_KINDS)}")
    if not float(force.get("scale", drawn.scale)) > 0:
        raise InputError(f"scale must be positive, got {force['scale']!r}")
    return replace(drawn, **force)


def sample_resolution_and_voxel(rng, resolution=None, voxel_size=None) -> tuple[float, float]:
    """Target half-map resolution (log-uniform 2.5-8 A, as sim1) and a voxel size uniform in 0.5-2.5 A, at
    most the resolution / 2.2 (finer sampling than that would not hold the data's band)."""
    res = float(resolution) if resolution is not None else float(np.exp(rng.uniform(np.log(2.5), np.log(8.0))))
    if voxel_size is None:
        lo, hi = VOXEL_RANGE[0], min(VOXEL_RANGE[1], res / VOXELS_PER_RESOLUTION)
        voxel_size = rng.uniform(lo, max(lo, hi))
    return res, float(voxel_size)


def noise_amplitude(d: Sim2Draws, s: np.ndarray, nyquist: float) -> np.ndarray:
    """Relative Fourier amplitude of the drawn noise family at ``s`` (1/A), without the roll-off."""
    if d.noise == "falling":
        beta, b_env = d.falling
        return (s + 0.02) ** (-beta) * np.exp(-b_env * s**2 / 4.0)
    if d.noise == "flat":
        return 1.0 + d.flat_tilt * (np.minimum(s / nyquist, 1.0) - 0.5)
    alpha, s0 = d.rising
    return (s + s0) ** alpha


def rolloff_response(s: np.ndarray, nyquist: float, knee: float, width: float) -> np.ndarray:
    """A regularised reconstruction's damping near Nyquist: 1 up to ``knee * nyquist``, a half-Gaussian of
    standard deviation ``width * nyquist`` beyond."""
    excess = np.maximum(s - knee * nyquist, 0.0) / (width * nyquist)
    return np.exp(-0.5 * excess**2)


def coloured_noise(rng: np.random.Generator, shape, voxel: float, d: Sim2Draws) -> np.ndarray:
    """Unit-variance, zero-mean Gaussian noise with the drawn family's radial amplitude (no roll-off)."""
    fz, fy, fx = axis_frequencies(shape, voxel)
    s = np.sqrt(fz**2 + fy**2 + fx**2)
    amp = noise_amplitude(d, s, 0.5 / voxel).astype(np.float32)
    amp[0, 0, 0] = 0.0
    out = np.fft.irfftn(np.fft.rfftn(rng.normal(size=shape).astype(np.float32)) * amp, shape, axes=(0, 1, 2))
    return (out / (out.std() + 1e-12)).astype(np.float32)


def fourier_filter(vol: np.ndarray, response: np.ndarray) -> np.ndarray:
    """``vol`` (float32) times ``response`` (on its rfftn grid) in Fourier space."""
    return np.fft.irfftn(np.fft.rfftn(vol) * response, vol.shape, axes=(0, 1, 2)).astype(np.float32)


def rolloff_filter(shape, voxel: float, d: Sim2Draws) -> np.ndarray:
    """:func:`rolloff_response` of the drawn shape on the rfftn grid of ``shape``."""
    fz, fy, fx = axis_frequencies(shape, voxel)
    return rolloff_response(np.sqrt(fz**2 + fy**2 + fx**2), 0.5 / voxel, *d.rolloff_shape).astype(np.float32)


def anisotropic_filter(shape, voxel: float, d: Sim2Draws) -> np.ndarray:
    """``exp(-B (s . n)^2 / 4)``: the B-factor blur of a map along the axis ``n`` only (preferred orientation
    leaves one direction worse resolved)."""
    fz, fy, fx = axis_frequencies(shape, voxel)
    along = fx * d.axis[0] + fy * d.axis[1] + fz * d.axis[2]
    return np.exp(-d.anisotropic_b * along**2 / 4.0).astype(np.float32)


def depositor_mask(d: Sim2Draws, atoms: Atoms, corner, shape, voxel: float) -> np.ndarray:
    """The soft mask a depositor multiplies both halves by: the atoms dilated by 5 A plus the drawn dilation
    (``model``), or a sphere around their centre reaching the drawn margin beyond the farthest atom
    (``sphere``), each with the drawn cosine edge; exactly 0 beyond it."""
    grow, edge = d.mask_shape
    if d.mask == "model":
        return atom_mask(voxel_indices(atoms.pos, corner, voxel), shape, voxel, 5.0 + grow, edge,
                         outside_atoms=False)
    centre = atoms.pos.mean(0)
    radius = float(np.linalg.norm(atoms.pos - centre, axis=1).max()) + grow
    z = corner[2] + voxel * np.arange(shape[0])[:, None, None] - centre[2]
    y = corner[1] + voxel * np.arange(shape[1])[None, :, None] - centre[1]
    x = corner[0] + voxel * np.arange(shape[2])[None, None, :] - centre[0]
    return cosine_edge(np.sqrt(x**2 + y**2 + z**2), radius, edge).astype(np.float32)


def scale_and_offset(maps: list[np.ndarray], d: Sim2Draws, rms: float) -> tuple[list[np.ndarray], float]:
    """``maps`` times the drawn scale plus the drawn offset (``d.offset`` molecule rms ``rms``, scaled);
    float32, and the offset in the output's units. A masked-off voxel (0) becomes the offset exactly."""
    scale = np.float32(d.scale)
    offset = np.float32(d.offset * rms * d.scale)
    return [(m.astype(np.float32) * scale + offset).astype(np.float32) for m in maps], float(offset)
