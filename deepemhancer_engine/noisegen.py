"""Coloured Gaussian noise with named radial power spectra, for the evaluation's noise-only inputs.

Written apart from the training simulator (``training/simulate.py``, a power law times a B envelope
with random parameters): the evaluation must not share the noise model the network was trained on,
or it would flatter it. Four fixed shapes, amplitude ``A(s)`` per Fourier coefficient (s in 1/A):

* ``falling``: ``1 / (1 + (s / s_f)^2)``, ``s_f = 1 / 8 A`` (a Lorentzian; noise of a blurred map);
* ``flat``: ``1`` (white);
* ``rising``: ``sqrt(1 + (s / s_r)^2)``, ``s_r = 1 / 10 A`` (power grows like ``s^2``, as in an
  unregularised back-projection, whose sampling density falls like ``1 / s^2``);
* ``rising_rolloff``: ``rising`` times a raised cosine in ``s / s_nyq`` from 0.5 to 1.1 (the damping
  of a regularised or interpolated reconstruction near the Nyquist frequency ``s_nyq`` of the grid).

The realisation is white Gaussian noise from ``numpy.random.default_rng(seed)`` filtered by ``A``, with
the DC coefficient removed and the real-space standard deviation set to ``std`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from .errors import InputError
from .fourier import as_xyz, frequency_grid, raised_cosine

NOISE_SPECTRA = ("falling", "flat", "rising", "rising_rolloff")
#: Corner frequency (1/A) of the falling spectrum.
FALLING_CORNER = 1.0 / 8.0
#: Corner frequency (1/A) above which the rising spectrum's power grows like s^2.
RISING_CORNER = 1.0 / 10.0
#: Roll-off of ``rising_rolloff``: flat below 0.5 s_nyq, zero from 1.1 s_nyq.
ROLLOFF_START, ROLLOFF_END = 0.5, 1.1
#: Voxel sizes (A) and replicates of the evaluation grid; its seeds start at the evaluation range.
GRID_VOXEL_SIZES = (0.8, 1.3, 2.0)
GRID_REPLICATES = 2
EVALUATION_SEED_START = 10_000_000


def spectrum_amplitude(spectrum: str, s: np.ndarray, nyquist: float) -> np.ndarray:
    """Relative Fourier amplitude of the named spectrum at frequencies ``s`` (1/A).

    ``nyquist`` (1/A) places the roll-off of ``rising_rolloff``; the other shapes are physical
    (fixed in 1/A), so one spectrum means the same noise at every voxel size.

    Example:
        >>> spectrum_amplitude("falling", np.array([0.0, 0.125]), 0.5).tolist()
        [1.0, 0.5]
    """
    s = np.asarray(s, dtype=np.float64)
    if spectrum == "falling":
        return 1.0 / (1.0 + (s / FALLING_CORNER) ** 2)
    if spectrum == "flat":
        return np.ones_like(s)
    rising = np.sqrt(1.0 + (s / RISING_CORNER) ** 2)
    if spectrum == "rising":
        return rising
    if spectrum == "rising_rolloff":
        if not nyquist > 0:
            raise InputError(f"Nyquist frequency must be positive, got {nyquist!r}")
        mid, width = (ROLLOFF_START + ROLLOFF_END) / 2.0, ROLLOFF_END - ROLLOFF_START
        return rising * raised_cosine(s / nyquist, mid, width)
    raise InputError(f"unknown noise spectrum {spectrum!r}; choose one of {', '.join(NOISE_SPECTRA)}")


def coloured_noise(shape: Sequence[int], voxel_size: float | Sequence[float], spectrum: str, seed: int, *,
                   std: float = 1.0) -> np.ndarray:
    """Zero-mean Gaussian noise ``[z, y, x]`` float32 whose radial power follows ``spectrum``.

    Why: noise-only and signal-plus-noise inputs with controlled colour show whether an enhancer
    invents structure from noise of a kind it was not trained on. Deterministic per ``seed``; the
    real-space standard deviation is ``std`` exactly (0 gives zeros).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise InputError(f"noise needs a 3D shape with at least 2 voxels per axis, got {shape}")
    if not (np.isfinite(std) and std >= 0):
        raise InputError(f"noise std must be finite and not negative, got {std!r}")
    vs = as_xyz(voxel_size)
    nyquist = 0.5 / max(vs)
    amp = spectrum_amplitude(spectrum, frequency_grid(shape, vs), nyquist).astype(np.float32)
    amp[0, 0, 0] = 0.0
    white = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    noise = scipy.fft.irfftn(scipy.fft.rfftn(white, workers=-1) * amp, s=shape, workers=-1)
    noise = noise.astype(np.float64)
    noise -= noise.mean()
    sd = float(noise.std())
    return (noise * (std / sd if sd > 0 else 0.0)).astype(np.float32)


@dataclass(frozen=True)
class NoiseCase:
    """One noise input of the evaluation grid: spectrum name, voxel size (A), seed, replicate index."""

    spectrum: str
    voxel_size: float
    seed: int
    replicate: int

    @property
    def name(self) -> str:
        """Readable case label, e.g. ``rising_1.3A_r0``."""
        return f"{self.spectrum}_{self.voxel_size:g}A_r{self.replicate}"

    def generate(self, shape: Sequence[int], *, std: float = 1.0) -> np.ndarray:
        """This case's noise map (see :func:`coloured_noise`)."""
        return coloured_noise(shape, self.voxel_size, self.spectrum, self.seed, std=std)


def noise_test_grid() -> list[NoiseCase]:
    """The 24 evaluation cases: 4 spectra x 3 voxel sizes x 2 replicates.

    Each case has its own seed (10,000,000 upwards, the evaluation range, apart from training seeds),
    so no two cases share the white noise underneath and the cases are independent samples.
    """
    cases = []
    for spectrum in NOISE_SPECTRA:
        for voxel in GRID_VOXEL_SIZES:
            for rep in range(GRID_REPLICATES):
                cases.append(NoiseCase(spectrum, voxel, EVALUATION_SEED_START + len(cases), rep))
    return cases
