"""Per-voxel confidence of an enhanced map, from the two half maps alone (no atomic model).

Each half map is enhanced on its own with the same network and settings as the average. Where the
enhanced density is real, both halves reproduce it independently; where the network made it up from
noise, they disagree. The confidence measures that agreement where the network adds detail:

1. both enhanced halves are band-passed to the detail band, from ``band_low * d`` to ``d`` (``d``: the
   half-map FSC-0.143 resolution), with raised-cosine edges;
2. their local correlation ``cc`` in a Gaussian window of ``window * d`` (sigma, A);
3. the spread that noise alone gives to ``cc`` in that window, ``sigma0``, from the autocorrelation of the
   difference of the two band-passed halves (signal cancels there; what is left is the noise, with its
   real colour): ``sigma0^2 = sum_r A(r) rho(r)^2``, ``A`` the window's self-overlap (a normalised
   Gaussian of sigma ``sqrt(2) * window * d``), ``rho`` the noise autocorrelation;
4. ``confidence = tanh(max(0, atanh(cc) - sigmas * sigma0))``: the local correlation of the independent
   halves after removing ``sigmas`` noise-only standard deviations in Fisher z; 0 where the agreement is
   within what noise gives, towards 1 where both halves carry the same detail.

Why each choice: docs/design.md, "Confidence map". The parameters were tuned on simulated pairs of the
training split only (``benchmarks/confidence.py --tune``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage

from .errors import InputError
from .fourier import as_xyz, frequency_grid, raised_cosine

log = logging.getLogger(__name__)

#: Confidence at or above which a voxel counts as trusted in the summary.
TRUSTED = 0.5
#: The summary's contour level: solvent noise mean plus this many noise standard deviations of the
#: enhanced map (normalize.estimate_noise).
CONTOUR_SIGMAS = 3.0


@dataclasses.dataclass(frozen=True)
class ConfidenceParams:
    """The method's three numbers (module text): the band's coarse end and the window's sigma, both in units
    of the resolution ``d``, and the noise-only standard deviations removed in Fisher z."""

    band_low: float = 3.0
    window: float = 1.0
    sigmas: float = 2.0

    def __post_init__(self) -> None:
        if not (self.band_low > 1.0 and self.window > 0 and self.sigmas >= 0):
            raise InputError(f"confidence parameters need band_low > 1, window > 0, sigmas >= 0, got {self}")


DEFAULT_PARAMS = ConfidenceParams()


def _band_response(s: np.ndarray, resolution: float, band_low: float) -> np.ndarray:
    """The detail band ``[band_low * d, d]`` (A) with raised-cosine edges a tenth of each cut wide."""
    top, bottom = 1.0 / resolution, 1.0 / (band_low * resolution)
    low = raised_cosine(s, top, 0.2 * top)
    return (low * (1.0 - raised_cosine(s, bottom, 0.2 * bottom))).astype(np.float32)


def _window_sigma(resolution: float, window: float, vs: tuple[float, float, float]) -> tuple[float, ...]:
    """The window's sigma in voxels, ``[z, y, x]``."""
    return tuple(window * resolution / v for v in (vs[2], vs[1], vs[0]))


def null_spread(f1: np.ndarray, f2: np.ndarray, shape: Sequence[int], sigma_vox: Sequence[float]) -> float:
    """Standard deviation of the windowed correlation of two independent noise fields with the noise of
    the halves (``f1``, ``f2``: their band-passed ``rfftn``), ``sqrt(sum_r A(r) rho(r)^2)`` (module text)."""
    power = np.abs(f1 - f2) ** 2
    rho = scipy.fft.irfftn(power, s=tuple(shape), workers=-1).astype(np.float32)
    del power
    if not rho.flat[0] > 0:
        return 1.0  # identical halves: nothing measures the noise, no agreement is trusted
    rho /= rho.flat[0]
    rho *= rho
    for axis, (n, sig) in enumerate(zip(shape, sigma_vox)):
        r = np.minimum(np.arange(n), n - np.arange(n)).astype(np.float64)
        g = np.exp(-(r**2) / (4.0 * sig * sig))  # self-overlap of a Gaussian of sigma sig: sigma sqrt(2)
        g /= g.sum()
        view = [1, 1, 1]
        view[axis] = n
        rho *= g.reshape(view).astype(np.float32)
    return float(math.sqrt(max(float(rho.sum(dtype=np.float64)), 1e-12)))


def confidence_map(e1: np.ndarray, e2: np.ndarray, voxel_size: float | Sequence[float], resolution: float,
                   params: ConfidenceParams = DEFAULT_PARAMS) -> np.ndarray:
    """Confidence (float32, 0..1, the maps' shape) from two independently enhanced halves (module text).

    ``resolution``: the half-map FSC-0.143 resolution (A), which sets the band and the window.
    """
    e1, e2 = np.asarray(e1, dtype=np.float32), np.asarray(e2, dtype=np.float32)
    if e1.ndim != 3 or e1.shape != e2.shape:
        raise InputError(f"confidence needs two 3D maps of one shape, got {e1.shape} and {e2.shape}")
    vs = as_xyz(voxel_size)
    if not (resolution > 0 and math.isfinite(resolution)):
        raise InputError(f"confidence needs a positive resolution, got {resolution!r}")
    resolution = max(float(resolution), 2.0 * max(vs))
    shape = e1.shape
    band = _band_response(frequency_grid(shape, vs, np.float32), resolution, params.band_low)
    f1 = scipy.fft.rfftn(e1, workers=-1)
    f1 *= band
    f2 = scipy.fft.rfftn(e2, workers=-1)
    f2 *= band
    del band
    sigma_vox = _window_sigma(resolution, params.window, vs)
    sigma0 = null_spread(f1, f2, shape, sigma_vox)
    a1 = scipy.fft.irfftn(f1, s=shape, workers=-1).astype(np.float32)
    del f1
    a2 = scipy.fft.irfftn(f2, s=shape, workers=-1).astype(np.float32)
    del f2
    return _local_agreement(a1, a2, sigma_vox, params.sigmas * sigma0)


def _local_agreement(a1: np.ndarray, a2: np.ndarray, sigma_vox, shift: float) -> np.ndarray:
    """``tanh(max(0, atanh(cc) - shift))`` of the windowed correlation ``cc`` of ``a1`` and ``a2``; both are
    overwritten (the band-passed maps have no local mean to remove)."""
    s12 = ndimage.gaussian_filter(a1 * a2, sigma_vox, mode="wrap")
    a1 *= a1
    ndimage.gaussian_filter(a1, sigma_vox, output=a1, mode="wrap")
    a2 *= a2
    ndimage.gaussian_filter(a2, sigma_vox, output=a2, mode="wrap")
    a1 *= a2
    del a2
    floor = 1e-12 * float(a1.mean()) + 1e-30  # empty regions (a masked output): no agreement, not 0/0
    np.sqrt(a1 + floor, out=a1)
    np.divide(s12, a1, out=s12)
    del a1
    np.clip(s12, -0.999999, 0.999999, out=s12)
    np.arctanh(s12, out=s12)
    s12 -= shift
    np.maximum(s12, 0.0, out=s12)
    np.tanh(s12, out=s12)
    return s12


def summary(enhanced: np.ndarray, confidence: np.ndarray) -> dict:
    """What the protocol and the log show: the contour level of the enhanced map (solvent mean +
    :data:`CONTOUR_SIGMAS` noise std, normalize.estimate_noise), the molecule's voxels above it, the
    fraction of them with confidence >= :data:`TRUSTED`, and the median confidence there."""
    from .normalize import estimate_noise

    try:
        mean, std = estimate_noise(enhanced)
    except InputError:  # a constant solvent (a masked output): its level is the contour's base
        mean, std = float(np.median(enhanced)), 0.0
    level = mean + CONTOUR_SIGMAS * std
    inside = enhanced > level
    n = int(np.count_nonzero(inside))
    conf = confidence[inside]
    return {
        "contour_level": float(level),
        "contour_rule": f"solvent mean + {CONTOUR_SIGMAS:g} noise std of the enhanced map",
        "molecule_voxels": n,
        "trusted_threshold": TRUSTED,
        "fraction_trusted": float(np.mean(conf >= TRUSTED)) if n else float("nan"),
        "median_confidence": float(np.median(conf)) if n else float("nan"),
    }


def describe(found: dict) -> str:
    """The summary on one log line (the Scipion protocol reads the JSON fields, not this line)."""
    return (f"Confidence: {100 * found['fraction_trusted']:.1f}% of the molecule (enhanced density above "
            f"{found['contour_level']:.4g}, {found['molecule_voxels']} voxels) has confidence >= "
            f"{found['trusted_threshold']:g}; median {found['median_confidence']:.3f}")


def header_label(found: dict) -> str:
    """The summary as one MRC header label of ``key=value`` words (the Scipion protocol reads it back)."""
    return (f"deepemhancer confidence fraction_trusted={found['fraction_trusted']:.4f} "
            f"contour={found['contour_level']:.5g} median={found['median_confidence']:.4f}")


def read_header_summary(labels: Sequence[str]) -> dict[str, float]:
    """The numbers of :func:`header_label` from a map's header labels (empty when none is there).

    Example:
        >>> read_header_summary(["deepemhancer confidence fraction_trusted=0.8000 contour=0.1 median=0.7"])
        {'fraction_trusted': 0.8, 'contour': 0.1, 'median': 0.7}
    """
    for label in labels:
        if label.startswith("deepemhancer confidence "):
            return {k: float(v) for k, v in (w.split("=", 1) for w in label.split()[2:])}
    return {}


def timed_confidence(e1, e2, voxel_size, resolution, params=DEFAULT_PARAMS, timings: dict | None = None):
    """:func:`confidence_map`, adding its seconds to ``timings['confidence']`` when given."""
    t0 = time.perf_counter()
    conf = confidence_map(e1, e2, voxel_size, resolution, params)
    if timings is not None:
        timings["confidence"] = timings.get("confidence", 0.0) + time.perf_counter() - t0
    return conf
