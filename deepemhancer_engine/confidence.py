"""Per-voxel confidence of an enhanced map, from the two half maps alone (no atomic model).

Each half map is enhanced on its own with the same network and settings as the average. Where the
enhanced density is real, both halves reproduce it independently; where the network made it up from
noise, they disagree. The confidence measures that agreement in the band the data support:

1. both enhanced halves are low-passed at ``d`` (the half-map FSC-0.143 resolution; optionally band-passed
   from ``band_low * d``) and Fourier-resampled to ``d / SAMPLING`` A voxels;
2. their local correlation ``cc`` in a Gaussian window of sigma ``window * d`` (A), local means removed;
3. the spread that noise alone gives to ``cc`` in that window, ``sigma0``, from the autocorrelation of the
   difference of the two filtered halves (signal cancels there; what is left is the noise, with its real
   colour): ``sigma0^2 = sum_r A(r) rho(r)^2``, ``A`` the window's self-overlap (a normalised Gaussian of
   sigma ``sqrt(2) * window * d``), ``rho`` the noise autocorrelation;
4. ``t = max(cc - sigmas * sigma0, 0) / (1 - cc)``: the local signal-to-noise ratio of one half (``cc / (1 - cc)``
   for ``cc = S / (S + N)``) beyond what noise alone reaches; ``confidence = t / (t + snr_half)``: 0 where the
   agreement is within what noise gives, 0.5 at a local signal-to-noise ratio of ``snr_half`` (30, cc ~ 0.97),
   towards 1 above; linear in the signal-to-noise ratio where it is small, so a blurred or weak region's lower
   ratio shows instead of being squeezed near 1 with the core; brought back to the map's grid.

Why each choice, what was tried and the measured calibration: docs/design.md, "Confidence map". The
parameters were tuned on simulated pairs of the training split only (``benchmarks/confidence.py --tune``).
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
#: The confidence is computed on a grid of ``d / SAMPLING`` A voxels (``d``: the resolution) and brought back to
#: the map's grid by Fourier interpolation: the band ends at ``d``, so the coarser grid loses nothing the window
#: keeps, and at 1 A voxels and 4 A resolution it holds 1/27 of the voxels.
SAMPLING = 3.0
#: The summary's contour level: solvent noise mean plus this many noise standard deviations of the
#: enhanced map (normalize.estimate_noise).
CONTOUR_SIGMAS = 3.0


@dataclasses.dataclass(frozen=True)
class ConfidenceParams:
    """The method's numbers (module text), lengths in units of the resolution ``d``: ``band_low`` the band's
    coarse end (inf: everything up to the fine end), ``band_high`` its fine end, ``window`` the window's sigma,
    ``sigmas`` the noise-only standard deviations of ``cc`` removed, ``snr_half`` the local signal-to-noise ratio
    that maps to 0.5, ``floor`` how much of the box's mean noise power is added to the local variances (0: none).
    The defaults were chosen on the train split (docs/design.md, "Confidence map")."""

    band_low: float = math.inf
    window: float = 0.6
    sigmas: float = 3.0
    band_high: float = 1.0
    snr_half: float = 30.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        if not (self.band_low > self.band_high > 0 and self.window > 0 and self.sigmas >= 0 and self.snr_half > 0):
            raise InputError(f"confidence parameters need band_low > band_high > 0, window > 0, sigmas >= 0, "
                             f"snr_half > 0, got {self}")


DEFAULT_PARAMS = ConfidenceParams()


def _band_response(s: np.ndarray, resolution: float, band_low: float, band_high: float) -> np.ndarray:
    """The band ``[band_low * d, band_high * d]`` (A; a low-pass when ``band_low`` is inf) with raised-cosine
    edges a fifth of each cut wide."""
    top = 1.0 / (band_high * resolution)
    low = raised_cosine(s, top, 0.2 * top)
    if math.isfinite(band_low):
        bottom = 1.0 / (band_low * resolution)
        low *= 1.0 - raised_cosine(s, bottom, 0.2 * bottom)
    return low.astype(np.float32)


def _window_sigma(resolution: float, window: float, vs: tuple[float, float, float]) -> tuple[float, ...]:
    """The window's sigma in voxels, ``[z, y, x]``."""
    return tuple(window * resolution / v for v in (vs[2], vs[1], vs[0]))


def null_spread(f1: np.ndarray, f2: np.ndarray, shape: Sequence[int], sigma_vox: Sequence[float]
                ) -> tuple[float, float]:
    """``(sigma0, N)``: the standard deviation of the windowed correlation of two independent noise fields
    with the noise of the halves, ``sqrt(sum_r A(r) rho(r)^2)`` (module text), and the mean noise power per
    voxel of one band-passed half, ``N`` (``f1``, ``f2``: the halves' band-passed ``rfftn``)."""
    power = np.abs(f1 - f2) ** 2
    rho = scipy.fft.irfftn(power, s=tuple(shape), workers=-1).astype(np.float32)
    del power
    if not rho.flat[0] > 0:
        return 1.0, 0.0  # identical halves: nothing measures the noise, no agreement is trusted
    noise_power = 0.5 * float(rho.flat[0]) / math.prod(shape)  # mean (a1 - a2)^2 / 2: one half's noise power
    rho /= rho.flat[0]
    rho *= rho
    for axis, (n, sig) in enumerate(zip(shape, sigma_vox)):
        r = np.minimum(np.arange(n), n - np.arange(n)).astype(np.float64)
        g = np.exp(-(r**2) / (4.0 * sig * sig))  # self-overlap of a Gaussian of sigma sig: sigma sqrt(2)
        g /= g.sum()
        view = [1, 1, 1]
        view[axis] = n
        rho *= g.reshape(view).astype(np.float32)
    return float(math.sqrt(max(float(rho.sum(dtype=np.float64)), 1e-12))), noise_power


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
    target = resolution / SAMPLING
    if target <= max(vs) * (1.0 + 1e-3):
        return _confidence_on_grid(e1, e2, vs, resolution, params)
    from .resample import from_working_grid, to_working_grid

    small1, info = to_working_grid(e1, vs, target=target)
    small2, _ = to_working_grid(e2, vs, target=target)
    conf = _confidence_on_grid(small1, small2, info.working_voxel_size, resolution, params)
    del small1, small2
    conf = from_working_grid(conf, info)
    return np.clip(conf, 0.0, 1.0, out=conf)


def _confidence_on_grid(e1: np.ndarray, e2: np.ndarray, vs: tuple[float, float, float], resolution: float,
                        params: ConfidenceParams) -> np.ndarray:
    """:func:`confidence_map` on the maps' own grid."""
    shape = e1.shape
    band = _band_response(frequency_grid(shape, vs, np.float32), resolution, params.band_low, params.band_high)
    f1 = scipy.fft.rfftn(e1, workers=-1)
    f1 *= band
    f2 = scipy.fft.rfftn(e2, workers=-1)
    f2 *= band
    del band
    sigma_vox = _window_sigma(resolution, params.window, vs)
    sigma0, noise_power = null_spread(f1, f2, shape, sigma_vox)
    a1 = scipy.fft.irfftn(f1, s=shape, workers=-1).astype(np.float32)
    del f1
    a2 = scipy.fft.irfftn(f2, s=shape, workers=-1).astype(np.float32)
    del f2
    return _local_agreement(a1, a2, sigma_vox, params.sigmas * sigma0, params.floor * noise_power,
                            params.snr_half)


def _local_agreement(a1: np.ndarray, a2: np.ndarray, sigma_vox, shift: float, noise_power: float,
                     snr_half: float) -> np.ndarray:
    """``t / (t + snr_half)``, ``t = max(cc - shift, 0) / (1 - cc)``, of the windowed correlation of ``a1`` and
    ``a2`` (local means removed), ``cc = C12 / sqrt((C11 + N) (C22 + N))``; ``N``, the box's mean noise power,
    keeps a faint pattern both halves share where the network leaves almost nothing (the solvent) from counting
    as agreement. Both inputs are overwritten."""

    def smooth(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma_vox, output=out, mode="wrap")

    m1, m2 = smooth(a1), smooth(a2)
    c12 = smooth(a1 * a2)
    c12 -= m1 * m2
    a1 *= a1
    smooth(a1, a1)
    m1 *= m1
    a1 -= m1
    del m1
    a2 *= a2
    smooth(a2, a2)
    m2 *= m2
    a2 -= m2
    del m2
    np.maximum(a1, 0.0, out=a1)
    np.maximum(a2, 0.0, out=a2)
    a1 += noise_power
    a2 += noise_power
    a1 *= a2
    del a2
    a1 += 1e-12 * float(a1.mean()) + 1e-30  # empty regions (a masked output): no agreement, not 0/0
    np.sqrt(a1, out=a1)
    np.divide(c12, a1, out=c12)
    np.clip(c12, -1.0, 0.999999, out=c12)
    np.subtract(1.0, c12, out=a1)
    c12 -= shift
    np.maximum(c12, 0.0, out=c12)
    c12 /= a1  # t: the signal-to-noise ratio beyond what noise reaches
    del a1
    c12 += snr_half
    np.reciprocal(c12, out=c12)
    c12 *= -snr_half
    c12 += 1.0  # t / (t + snr_half)
    return c12


def summary(enhanced: np.ndarray, confidence: np.ndarray) -> dict:
    """What the protocol and the log show: the contour level of the enhanced map (solvent mean +
    :data:`CONTOUR_SIGMAS` noise std, normalize.estimate_noise), the molecule's voxels above it, the
    fraction of them with confidence >= :data:`TRUSTED`, and the median confidence there."""
    from .normalize import estimate_noise

    # The enhanced map's own solvent statistics: flat by design (null correction, skipped cubes), so a
    # std of 0 is an answer here, not a masked input to work around.
    mean, std = estimate_noise(enhanced, masked_rule=False)
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


# ------------------------------------------------------------------------------------------ calibration

#: Edge (A) of the blocks the calibration divides the molecule into.
BLOCK_EDGE = 7.0


def blocks(volume: np.ndarray, edge: int) -> np.ndarray:
    """The ``edge``-voxel cubes of ``volume`` (trimmed to whole cubes) as rows: ``[n_blocks, edge^3]``."""
    nz, ny, nx = (n // edge for n in volume.shape)
    v = np.asarray(volume)[: nz * edge, : ny * edge, : nx * edge]
    v = v.reshape(nz, edge, ny, edge, nx, edge).transpose(0, 2, 4, 1, 3, 5)
    return v.reshape(nz * ny * nx, edge**3)


def block_cc(a: np.ndarray, b: np.ndarray, edge: int) -> np.ndarray:
    """Pearson correlation of ``a`` and ``b`` in each block (0 where either is constant)."""
    x, y = (blocks(np.asarray(m, dtype=np.float64), edge) for m in (a, b))
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    return np.where(den > 0, (x * y).sum(1) / np.where(den > 0, den, 1.0), 0.0)


@dataclasses.dataclass
class Calibration:
    """Per block of the molecule: mean confidence, local CC of the enhanced map with the model map and (with
    half maps) local CC of the two raw halves, the naive answer; Spearman correlations of both with the
    model CC; ``low``/``high``: median confidence of the blocks in the lowest and highest quarter of model CC."""

    confidence: np.ndarray
    model_cc: np.ndarray
    naive: np.ndarray | None
    spearman: float
    naive_spearman: float
    low: float
    high: float

    def values(self) -> dict[str, float]:
        return {"blocks": float(len(self.model_cc)), "spearman": self.spearman,
                "naive_spearman": self.naive_spearman, "conf_low_quarter": self.low, "conf_high_quarter": self.high}


def calibration(confidence: np.ndarray, enhanced: np.ndarray, model_map: np.ndarray, molecule: np.ndarray,
                voxel_size: float | Sequence[float], *, halves: tuple[np.ndarray, np.ndarray] | None = None,
                edge_A: float = BLOCK_EDGE) -> Calibration:
    """How well the confidence ranks the molecule's blocks (``edge_A`` cubes, at least half inside ``molecule``)
    by the local CC of ``enhanced`` with ``model_map``; the naive answer is the raw halves' local CC."""
    from scipy.stats import spearmanr

    edge = max(2, round(edge_A / max(as_xyz(voxel_size))))
    keep = blocks(np.asarray(molecule, dtype=np.float32), edge).mean(1) >= 0.5
    if np.count_nonzero(keep) < 3:
        raise InputError(f"fewer than 3 blocks of {edge_A:g} A lie inside the molecule: too small to calibrate")
    conf = blocks(confidence, edge).mean(1)[keep]
    cc = block_cc(enhanced, model_map, edge)[keep]
    naive = block_cc(*halves, edge)[keep] if halves is not None else None

    def rank(x) -> float:
        r = spearmanr(x, cc).statistic if np.ptp(x) > 0 else float("nan")
        return float(r)

    q1, q3 = np.percentile(cc, [25, 75])
    return Calibration(confidence=conf, model_cc=cc, naive=naive, spearman=rank(conf),
                       naive_spearman=rank(naive) if naive is not None else float("nan"),
                       low=float(np.median(conf[cc <= q1])), high=float(np.median(conf[cc >= q3])))
