"""In-band honesty check: does an enhancer put detail into both half maps that the truth does not have?

On a simulated pair with a known noise-free signal ``S``: ``E = f(S)`` is what the enhancer ``f`` makes
of the truth, ``e1 = f(half1)`` and ``e2 = f(half2)`` the enhanced halves. Per Fourier band between
``low`` (10 A) and the resolution ``d``, with band-pooled correlations (sums over all coefficients
of the band, as one big FSC shell),

    excess = FSC(e1, e2) - FSC(e1, E) * FSC(e2, E).

If ``e_i = a E + u_i`` with errors ``u_i`` uncorrelated with each other and with ``E``, the expected
excess is 0; a component ``c`` shared by both halves and absent from ``E`` gives
``excess = P_c / P_e`` (its fraction of the band power). The half-map FSC alone cannot tell shared
invention from signal; the enhanced truth ``E`` can. Its chance spread is below ``1 / sqrt(n)``
(``n`` coefficients in the band, Hermitian pairs counted twice as in :func:`metrics.fsc`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from .errors import InputError
from .fourier import as_xyz, frequency_grid, hermitian_weights

#: Default number of bands between ``low`` and ``high``, equally wide in 1/A.
DEFAULT_BANDS = 4


@dataclass(frozen=True)
class InBandExcess:
    """Per-band shared-invention excess of one simulated pair (bands ascending in frequency).

    ``edges``: band edges (1/A, ``n_bands + 1``); ``excess``, ``fsc_halves`` = FSC(e1, e2),
    ``fsc1_truth`` = FSC(e1, E), ``fsc2_truth`` = FSC(e2, E) and ``n`` (coefficients) per band.
    """

    edges: np.ndarray
    excess: np.ndarray
    fsc_halves: np.ndarray
    fsc1_truth: np.ndarray
    fsc2_truth: np.ndarray
    n: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        """Band centres (1/A)."""
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    @property
    def chance(self) -> np.ndarray:
        """``3 / sqrt(n)`` per band: an excess below this is within chance (3 sigma bound)."""
        return 3.0 / np.sqrt(self.n)

    @property
    def max(self) -> float:
        """Largest excess over the bands."""
        return float(np.max(self.excess))

    @property
    def mean(self) -> float:
        """Mean excess over the bands (each band counts once)."""
        return float(np.mean(self.excess))


def band_edges(low: float, high: float, bands: int | Sequence[float] = DEFAULT_BANDS) -> np.ndarray:
    """Band edges in 1/A, ascending.

    ``bands`` an int: that many bands equally wide in 1/A from ``1 / low`` to ``1 / high`` (A), so each
    band is a resolution range one reads off an FSC plot. A sequence: the edges themselves in A
    (coarse to fine, at least two), replacing ``low`` and ``high``.

    Example:
        >>> band_edges(10.0, 5.0, 2).tolist()
        [0.1, 0.15000000000000002, 0.2]
    """
    if isinstance(bands, (int, np.integer)):
        if bands < 1:
            raise InputError(f"need at least one band, got {bands}")
        if not (0 < high < low):
            raise InputError(f"band limits must satisfy 0 < high < low (A), got low={low!r} high={high!r}")
        return np.linspace(1.0 / low, 1.0 / high, int(bands) + 1)
    res = np.asarray(bands, dtype=np.float64)
    if res.ndim != 1 or res.size < 2 or not np.all(res > 0) or not np.all(np.diff(res) < 0):
        raise InputError(f"band edges must be two or more positive resolutions (A), decreasing, got {bands!r}")
    return 1.0 / res


def _band_index(shape: tuple[int, int, int], voxel_size, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band of each ``rfftn`` coefficient (-1 outside all bands or beyond Nyquist) and its Hermitian
    weight (2, or 1 on the x = 0 and even-Nyquist planes, so sums equal full-transform sums)."""
    s = frequency_grid(shape, voxel_size)
    index = np.searchsorted(edges, s, side="right") - 1
    index[s == edges[-1]] = len(edges) - 2  # the top edge belongs to the last band
    index[(index >= len(edges) - 1) | (s > 0.5 / max(voxel_size) + 1e-12)] = -1
    return index, np.broadcast_to(hermitian_weights(shape), s.shape)


def _pooled(fa: np.ndarray, fb: np.ndarray, index: np.ndarray, weight: np.ndarray, nb: int) -> np.ndarray:
    """Band-pooled correlation ``sum Re(a b*) / sqrt(sum |a|^2 sum |b|^2)`` per band (0 if empty)."""
    keep = index >= 0
    idx, w = index[keep], weight[keep]
    a, b = fa[keep], fb[keep]
    num = np.bincount(idx, weights=w * (a * np.conj(b)).real, minlength=nb)[:nb]
    pa = np.bincount(idx, weights=w * np.abs(a) ** 2, minlength=nb)[:nb]
    pb = np.bincount(idx, weights=w * np.abs(b) ** 2, minlength=nb)[:nb]
    den = np.sqrt(pa * pb)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def in_band_excess(e1: np.ndarray, e2: np.ndarray, truth: np.ndarray, voxel_size: float | Sequence[float], *,
                   high: float, low: float = 10.0, bands: int | Sequence[float] = DEFAULT_BANDS,
                   mask: np.ndarray | None = None) -> InBandExcess:
    """Shared-invention excess ``FSC(e1, e2) - FSC(e1, E) FSC(e2, E)`` per band (see module text).

    Why: an enhancer that invents the same detail in both halves raises their FSC without being right;
    against the enhanced truth ``E`` (``truth``) that part shows as a positive excess. ``high`` is the
    resolution ``d`` (A); ``bands`` see :func:`band_edges`; ``mask`` multiplies all three maps.
    """
    maps = [np.asarray(m, dtype=np.float32) for m in (e1, e2, truth)]
    if maps[0].ndim != 3 or any(m.shape != maps[0].shape for m in maps):
        raise InputError(f"in-band excess needs three 3D maps of one shape, got {[m.shape for m in maps]}")
    if mask is not None:
        if np.shape(mask) != maps[0].shape:
            raise InputError(f"mask shape {np.shape(mask)} differs from map shape {maps[0].shape}")
        maps = [m * np.asarray(mask, dtype=np.float32) for m in maps]
    vs = as_xyz(voxel_size)
    edges = band_edges(low, high, bands)
    if edges[-1] > 0.5 / max(vs) + 1e-12:
        raise InputError(f"band edge {1 / edges[-1]:.3g} A is finer than Nyquist ({2 * max(vs):.3g} A)")
    index, weight = _band_index(maps[0].shape, vs, edges)
    nb = len(edges) - 1
    n = np.bincount(index[index >= 0], weights=weight[index >= 0], minlength=nb)[:nb]
    if np.any(n == 0):
        raise InputError(f"a band between {1 / edges[0]:.3g} and {1 / edges[-1]:.3g} A holds no coefficient; "
                         "use fewer bands or a larger box")
    f1, f2, ft = (scipy.fft.rfftn(m, workers=-1) for m in maps)
    c12, c1t, c2t = (_pooled(a, b, index, weight, nb) for a, b in ((f1, f2), (f1, ft), (f2, ft)))
    return InBandExcess(edges=edges, excess=c12 - c1t * c2t, fsc_halves=c12, fsc1_truth=c1t, fsc2_truth=c2t, n=n)


def enhancer_excess(enhancer: Callable[[np.ndarray], np.ndarray], signal: np.ndarray, half1: np.ndarray,
                    half2: np.ndarray, voxel_size: float | Sequence[float], *, high: float, **kwargs
                    ) -> InBandExcess:
    """:func:`in_band_excess` of ``enhancer`` applied to both halves and to the noise-free ``signal``.

    Why: one call per simulated pair for the evaluation; ``kwargs`` go to :func:`in_band_excess`.
    """
    return in_band_excess(enhancer(half1), enhancer(half2), enhancer(signal), voxel_size, high=high, **kwargs)


@dataclass(frozen=True)
class ExcessSpread:
    """Per-band mean, standard deviation (ddof 1; 0 for one run), min and max of the excess over runs."""

    edges: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    runs: int


def excess_spread(results: Sequence[InBandExcess]) -> ExcessSpread:
    """Aggregate :class:`InBandExcess` over seeds (same bands), for the evaluation report.

    Why: one pair's excess is a noisy number; its spread over seeds says whether a positive mean is
    real. InputError for no results or results with different band edges.
    """
    if not results:
        raise InputError("excess_spread needs at least one InBandExcess")
    edges = results[0].edges
    if any(r.edges.shape != edges.shape or not np.allclose(r.edges, edges) for r in results):
        raise InputError("excess_spread needs results with the same band edges")
    x = np.stack([r.excess for r in results])
    std = x.std(axis=0, ddof=1) if len(results) > 1 else np.zeros(x.shape[1])
    return ExcessSpread(edges=edges, mean=x.mean(axis=0), std=std, min=x.min(axis=0), max=x.max(axis=0),
                        runs=len(results))
