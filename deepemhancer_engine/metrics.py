"""Map-quality metrics written once: FSC, resolution, real-space CC, Guinier B, sharpening, masks.

Conventions: arrays are ``[z, y, x]`` float32, voxel sizes ``(x, y, z)`` in A, spatial frequencies
``s`` in 1/A. Shells are ``1 / L`` wide, ``L`` the longest box edge in A, and reach the Nyquist
frequency of the coarsest axis (corners beyond it are left out). Fourier sums use the half
transform (``rfftn``) with the Hermitian-pair weight 2, so they equal full-transform sums.

Used by ``deepemhancer evaluate`` and ``benchmarks/quality.py``. The definitions are those of the
established tools: the map-model FSC of phenix.mtriage; CC_mask and CC_box of phenix.map_model_cc
(Afonine et al. 2018, Acta Cryst. D74:814); RELION's postprocess for the sharpening (FSC weighting
sqrt(2 FSC / (1 + FSC)) of Rosenthal & Henderson 2003, Guinier fit from 10 A to the FSC-0.143
resolution, sharpening by the fitted B, low-pass with a raised-cosine edge). Frequency grid, voxel-size
parsing and the raised cosine come from :mod:`deepemhancer_engine.fourier`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from .errors import InputError
from .fourier import as_xyz, axis_frequencies, cosine_edge, frequency_planes, hermitian_weights, lowpass_response

log = logging.getLogger(__name__)

#: Electron scattering factor of carbon, 5 Gaussians in (sin(theta)/lambda)^2 (Int. Tables C 4.3.2.2,
#: as in gemmi's ``Element("C").c4322``); used for the phenix-style CC_mask atom radius.
_C_ELECTRON_A = (0.0893, 0.2563, 0.757, 1.0487, 0.3575)
_C_ELECTRON_B = (0.2465, 1.71, 6.4094, 18.6113, 50.2523)


@dataclass(frozen=True)
class FSCCurve:
    """A Fourier shell correlation curve: shell centres ``freq`` (1/A), ``fsc``, ``n`` coefficients."""

    freq: np.ndarray
    fsc: np.ndarray
    n: np.ndarray

    def resolution(self, threshold: float) -> float:
        """Resolution (A) where the curve first drops below ``threshold``; see :func:`resolution_at`."""
        return resolution_at(self, threshold)


@functools.lru_cache(maxsize=16)
def _shell_layout(shape: tuple[int, int, int], voxel_size: tuple[float, float, float]) -> tuple[int, float]:
    """``(number of shells, shell width in 1/A)``: one-voxel shells of the largest box edge up to the coarsest
    axis's Nyquist."""
    nz, ny, nx = shape
    vx, vy, vz = voxel_size
    width = 1.0 / max(nx * vx, ny * vy, nz * vz)
    return int(math.floor(0.5 / max(voxel_size) / width + 1e-6)) + 1, width


def _shell_planes(shape: tuple[int, int, int], voxel_size: tuple[float, float, float], *, corners: bool = False):
    """Per Z plane of the ``rfftn`` grid: ``(k, shell index (-1 beyond Nyquist), Hermitian weights)``. The same
    |s| (the same float64 operations in the same order as ``fourier.frequency_grid``) and bins as a whole-grid
    index, without its volume-sized float64 |s| and int64 index (together 2 maps' worth of memory at 384^3,
    which a cache would keep for the whole run). ``corners``: the frequencies beyond the coarsest axis's Nyquist
    keep shells of their own (indices up to :func:`_all_shells`) instead of -1."""
    n_shells, width = _shell_layout(shape, voxel_size)
    fz, fy, fx = axis_frequencies(shape, voxel_size)
    yx_y, yx_x = fy[0] ** 2, fx[0] ** 2
    weight = hermitian_weights(shape)[0]
    for k in range(shape[0]):
        s = np.sqrt(fz[k] ** 2 + yx_y + yx_x)
        index = np.rint(s / width).astype(np.int64)
        if not corners:
            index[index >= n_shells] = -1
        yield k, index, np.broadcast_to(weight, index.shape)


def _all_shells(shape: tuple[int, int, int], voxel_size: tuple[float, float, float]) -> int:
    """How many shells :func:`_shell_planes` with ``corners`` can return (up to the box's corner)."""
    _, width = _shell_layout(shape, voxel_size)
    return int(math.floor(math.sqrt(sum((0.5 / v) ** 2 for v in voxel_size)) / width)) + 2


def _shell_freq(shape: tuple[int, int, int], voxel_size: tuple[float, float, float]) -> np.ndarray:
    n_shells, width = _shell_layout(shape, voxel_size)
    return np.arange(n_shells) * width


def _rfft(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(f"a 3D map is needed, got an array of shape {volume.shape}")
    return scipy.fft.rfftn(volume, workers=-1)


def fsc(
    a: np.ndarray, b: np.ndarray, voxel_size: float | Sequence[float], *, mask: np.ndarray | None = None
) -> FSCCurve:
    """Fourier shell correlation of two maps of the same shape (optionally both multiplied by ``mask``).

    Example: ``fsc(m, m, 1.0).fsc`` is all ones; for independent noise it scatters around 0 with
    standard deviation about ``1 / sqrt(n)``.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise InputError(f"FSC needs maps of the same shape, got {a.shape} and {b.shape}")
    if mask is not None:
        if mask.shape != a.shape:
            raise InputError(f"mask shape {mask.shape} differs from map shape {a.shape}")
        a, b = a * mask, b * mask
    vs = as_xyz(voxel_size)
    freq = _shell_freq(a.shape, vs)
    fa, fb = _rfft(a), _rfft(b)
    n = len(freq)
    num, pa, pb, counts = (np.zeros(n) for _ in range(4))
    for k, index, weight in _shell_planes(a.shape, vs):  # plane by plane: no volume-sized index or products
        bins = np.where(index >= 0, index, n).ravel()  # beyond Nyquist: an extra bin, dropped

        def shell(values: np.ndarray) -> np.ndarray:
            return np.bincount(bins, weights=(values * weight).ravel(), minlength=n + 1)[:n]

        num += shell((fa[k] * np.conj(fb[k])).real)
        pa += shell(np.abs(fa[k]) ** 2)
        pb += shell(np.abs(fb[k]) ** 2)
        counts += np.bincount(bins, weights=weight.ravel(), minlength=n + 1)[:n]
    den = np.sqrt(pa * pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return FSCCurve(freq=freq, fsc=curve, n=counts)


def resolution_at(curve: FSCCurve, threshold: float) -> float:
    """Resolution (A) of the first crossing of ``threshold`` after the DC shell.

    The crossing frequency is interpolated linearly between the last shell at or above the threshold
    and the first shell below it. A curve that never drops below gives the resolution of the last
    shell (Nyquist); one already below at the first shell gives that shell's resolution.
    """
    f, c = curve.freq, curve.fsc
    below = np.nonzero(c[1:] < threshold)[0]
    if below.size == 0:
        return float(1.0 / f[-1])
    i = int(below[0]) + 1
    if i == 1:
        return float(1.0 / f[1])
    c0, c1 = c[i - 1], c[i]
    frac = (c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0
    return float(1.0 / (f[i - 1] + frac * (f[i] - f[i - 1])))


def max_fsc_gain(curve: FSCCurve, reference: FSCCurve, beyond_resolution: float) -> float:
    """Largest ``curve - reference`` at frequencies finer than ``beyond_resolution`` (A); NaN if none."""
    sel = curve.freq > 1.0 / beyond_resolution + 1e-9
    return float(np.max(curve.fsc[sel] - reference.fsc[sel])) if sel.any() else float("nan")


def max_fsc_beyond(curve: FSCCurve, beyond_resolution: float) -> float:
    """Largest FSC at frequencies finer than ``beyond_resolution`` (A); NaN if none."""
    sel = curve.freq > 1.0 / beyond_resolution + 1e-9
    return float(np.max(curve.fsc[sel])) if sel.any() else float("nan")


def cc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two maps over all voxels, or over the voxels where ``mask`` is true."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"CC needs maps of the same shape, got {a.shape} and {b.shape}")
    if mask is not None:
        sel = np.asarray(mask) > 0.5
        a, b = a[sel], b[sel]
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.dot(a.ravel(), a.ravel())) * float(np.dot(b.ravel(), b.ravel())))
    return float(np.dot(a.ravel(), b.ravel()) / den) if den > 0 else float("nan")


def cc_box(volume: np.ndarray, model_map: np.ndarray) -> float:
    """CC_box of phenix.map_model_cc: CC over every voxel of the box."""
    return cc(volume, model_map)


def cc_mask(volume: np.ndarray, model_map: np.ndarray, atom_mask: np.ndarray) -> float:
    """CC_mask of phenix.map_model_cc: CC inside the binary mask of voxels near model atoms."""
    return cc(volume, model_map, atom_mask)


def atom_mask_radius(d_min: float, b_iso: float = 0.0) -> float:
    """Mask radius (A) around atoms for CC_mask, as phenix.map_model_cc chooses it.

    Twice the first inflection point of the image of a carbon atom (electron scattering, isotropic
    ``b_iso``) Fourier-truncated at ``d_min``; about 1.7 A at 2 A and 3.2 A at 4 A for B = 0.
    """
    if not d_min > 0:
        raise InputError(f"resolution must be positive, got {d_min!r}")
    s = np.linspace(0.0, 1.0 / d_min, 2001)
    ff = sum(a * np.exp(-(b + b_iso) * s**2 / 4.0) for a, b in zip(_C_ELECTRON_A, _C_ELECTRON_B))
    r = np.arange(0.0, max(10.0, d_min), 0.01)
    kernel = np.sinc(2.0 * np.outer(r, s))  # sin(2 pi r s) / (2 pi r s)
    image = np.trapezoid(4 * np.pi * s**2 * ff * kernel, s, axis=1)
    dxx = np.diff(image, 2)
    up = np.nonzero(dxx > 0)[0]
    if up.size == 0:
        return float(r[-1])
    return float(2.0 * (r[up[0]] + r[up[0] + 1]) / 2.0)


#: Solvent of the solvent / molecule ratio: voxels farther than this from every atom (A) at least; the first
#: hydration shell and riding hydrogens lie within ~4-5 A of modelled atoms, so nearer voxels are not solvent.
SOLVENT_MIN_DISTANCE = 6.0
#: Fewer voxels than this in the solvent or in the molecule: no estimate (NaN).
MIN_REGION_VOXELS = 100


def solvent_distance(resolution: float, mask_radius: float) -> float:
    """Distance (A) from the nearest atom beyond which a voxel is solvent: the CC_mask radius plus one
    resolution length (past the main lobe and first ripple of an atom's image at that resolution), at least
    :data:`SOLVENT_MIN_DISTANCE`."""
    return max(SOLVENT_MIN_DISTANCE, float(mask_radius) + float(resolution))


def _above_solvent(volume: np.ndarray, molecule: np.ndarray, solvent: np.ndarray):
    """Molecule and solvent voxel values minus the solvent mean (float64), or None when a region is too small."""
    v = np.asarray(volume, dtype=np.float64)
    mol, sol = np.asarray(molecule) > 0.5, np.asarray(solvent) > 0.5
    if v.shape != mol.shape or v.shape != sol.shape:
        raise InputError(f"map {v.shape}, molecule {mol.shape} and solvent {sol.shape} masks differ in shape")
    if mol.sum() < MIN_REGION_VOXELS or sol.sum() < MIN_REGION_VOXELS:
        return None
    base = float(v[sol].mean())
    return v[mol] - base, v[sol] - base


def rms(x: np.ndarray) -> float:
    """Root mean square, accumulated in float64."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.mean(x * x)))


def solvent_ratio(volume: np.ndarray, molecule: np.ndarray, solvent: np.ndarray) -> float:
    """How clean the solvent is: rms over ``solvent`` over rms over ``molecule``, both about the solvent mean.

    The solvent mean is the map's zero (a map's offset is arbitrary): the numerator is the solvent's own
    fluctuation (noise, ripples, invented blobs), the denominator the density standing above it in the
    molecule. Scale- and offset-free, so variants of one map compare; NaN when either region has fewer than
    :data:`MIN_REGION_VOXELS` voxels or the molecule is flat.
    """
    found = _above_solvent(volume, molecule, solvent)
    if found is None:
        return float("nan")
    mol = rms(found[0])
    return rms(found[1]) / mol if mol > 0 else float("nan")


def intensity_ratio(output: np.ndarray, input_map: np.ndarray, molecule: np.ndarray, solvent: np.ndarray) -> float:
    """Output/input intensity inside the molecule: rms over ``molecule`` of each map about its own solvent
    mean, output over input (1 keeps the input's scale; NaN as in :func:`solvent_ratio`)."""
    out, inp = _above_solvent(output, molecule, solvent), _above_solvent(input_map, molecule, solvent)
    if out is None or inp is None:
        return float("nan")
    den = rms(inp[0])
    return rms(out[0]) / den if den > 0 else float("nan")


def radial_amplitude(volume: np.ndarray, voxel_size: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Shell centres (1/A) and mean Fourier amplitude per shell (the Guinier plot is its log vs s^2)."""
    vs = as_xyz(voxel_size)
    freq = _shell_freq(np.shape(volume), vs)
    f = _rfft(volume)
    n = len(freq)
    amp, cnt = np.zeros(n), np.zeros(n)
    for k, index, weight in _shell_planes(np.shape(volume), vs):  # no volume-sized |F|, weight or count arrays
        keep = index >= 0
        idx, w = index[keep], weight[keep]
        amp += np.bincount(idx, weights=np.abs(f[k][keep]) * w, minlength=n)[:n]
        cnt += np.bincount(idx, weights=w, minlength=n)[:n]
    return freq, amp / np.maximum(cnt, 1)


def fit_bfactor(
    volume: np.ndarray,
    voxel_size: float | Sequence[float],
    *,
    low_res: float = 10.0,
    high_res: float,
) -> float:
    """B-factor (A^2, positive = decaying) from a straight-line Guinier fit between ``low_res`` and
    ``high_res`` A: ``ln|F|(s) = c - B s^2 / 4``. Returns 0 with a warning when fewer than 3 shells
    lie in the range (e.g. maps worse than 10 A)."""
    freq, amp = radial_amplitude(volume, voxel_size)
    sel = (freq >= 1.0 / low_res) & (freq <= 1.0 / high_res) & (amp > 0)
    if sel.sum() < 3:
        log.warning("Guinier fit: fewer than 3 shells between %.3g and %.3g A; B set to 0", low_res, high_res)
        return 0.0
    slope, _ = np.polyfit(freq[sel] ** 2, np.log(amp[sel]), 1)
    return float(-4.0 * slope)


def _filter(volume: np.ndarray, voxel_size, func) -> np.ndarray:
    """Multiply the transform by ``func(s)`` (s in 1/A, elementwise) and return the real map.

    The response is applied in place one Z plane of the transform at a time: no volume-sized frequency
    grid or product is allocated, so a filter costs the transform and the output (the conditioning of a
    384^3 map filters on the input grid inside the enhancement's memory budget)."""
    volume = np.asarray(volume, dtype=np.float32)
    f = _rfft(volume)
    for k, s in enumerate(frequency_planes(volume.shape, as_xyz(voxel_size))):
        f[k] *= func(s)
    out = scipy.fft.irfftn(f, s=volume.shape, workers=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def _bfactor_response(s: np.ndarray, bfactor: float) -> np.ndarray:
    """``exp(-B s^2 / 4)`` with the exponent clipped so that strong sharpening cannot overflow."""
    return np.exp(np.clip(-bfactor * s**2 / 4.0, -700.0, 80.0))


def apply_bfactor(volume: np.ndarray, voxel_size: float | Sequence[float], bfactor: float) -> np.ndarray:
    """Multiply amplitudes by ``exp(-B s^2 / 4)``: B > 0 blurs, B < 0 sharpens.

    Sharpening alone amplifies the highest frequencies by up to ``exp(|B| s_max^2 / 4)``; to sharpen and
    low-pass, use :func:`sharpen_lowpass` (one transform) rather than this followed by :func:`lowpass`.
    """
    return _filter(volume, voxel_size, lambda s: _bfactor_response(s, bfactor).astype(np.float32))


def _default_edge(shape: Sequence[int], vs: tuple[float, float, float]) -> float:
    return 2.0 / max(n * v for n, v in zip(reversed(tuple(shape)), vs))


def lowpass(
    volume: np.ndarray,
    voxel_size: float | Sequence[float],
    resolution: float,
    *,
    edge_width: float | None = None,
) -> np.ndarray:
    """Low-pass at ``resolution`` A with a raised-cosine edge ``edge_width`` (1/A) wide, centred on
    the cut-off (default two shells, as RELION's ``--filter_edge_width 2``)."""
    vs = as_xyz(voxel_size)
    edge = _default_edge(np.shape(volume), vs) if edge_width is None else edge_width
    return _filter(volume, vs, lambda s: lowpass_response(s, resolution, edge).astype(np.float32))


def sharpen_lowpass(
    volume: np.ndarray, voxel_size: float | Sequence[float], bfactor: float, resolution: float,
    *, edge_width: float | None = None,
) -> np.ndarray:
    """Apply ``exp(-B s^2 / 4)`` and the low-pass of :func:`lowpass` in one transform (no overflow or
    float32 round-off from amplified frequencies that the low-pass removes anyway)."""
    vs = as_xyz(voxel_size)
    edge = _default_edge(np.shape(volume), vs) if edge_width is None else edge_width

    def response(s):
        lp = lowpass_response(s, resolution, edge)
        return np.where(lp > 0, lp * _bfactor_response(np.minimum(s, 1.0 / resolution + edge), bfactor), 0.0
                        ).astype(np.float32)

    return _filter(volume, vs, response)


def fsc_weight(volume: np.ndarray, voxel_size: float | Sequence[float], curve: FSCCurve) -> np.ndarray:
    """Weight each shell by ``sqrt(2 FSC / (1 + FSC))`` (FSC clipped to [0, 1]; beyond Nyquist 0). A curve
    measured on another box (e.g. evaluate's noise maps with the pair's curve) is read at the shells' frequencies
    (0 beyond its last)."""
    vs = as_xyz(voxel_size)
    freq = _shell_freq(np.shape(volume), vs)
    f = np.clip(curve.fsc, 0.0, 1.0)
    w = np.sqrt(2.0 * f / (1.0 + f))
    if len(freq) != len(curve.freq) or not np.allclose(freq, curve.freq):  # a curve of another box: by frequency
        step = curve.freq[1] - curve.freq[0] if len(curve.freq) > 1 else np.inf
        w = np.where(freq <= curve.freq[-1] + 0.5 * step, np.interp(freq, curve.freq, w), 0.0)
    w = np.append(w, 0.0).astype(np.float32)  # index -1 -> 0
    volume = np.asarray(volume, dtype=np.float32)
    transform = _rfft(volume)
    for k, index, _ in _shell_planes(np.shape(volume), vs):  # in place, plane by plane (no volume-sized arrays)
        transform[k] *= w[index]
    out = scipy.fft.irfftn(transform, s=volume.shape, workers=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass(frozen=True)
class SharpenResult:
    """Output of :func:`auto_sharpen`: the map, the fitted B (A^2), the resolution used (A), the FSC."""

    volume: np.ndarray
    bfactor: float
    resolution: float
    fsc: FSCCurve


def auto_sharpen(
    half1: np.ndarray,
    half2: np.ndarray,
    voxel_size: float | Sequence[float],
    *,
    resolution: float | None = None,
    low_res: float = 10.0,
    mask: np.ndarray | None = None,
) -> SharpenResult:
    """RELION-style automatic global sharpening of the average of two half maps.

    FSC of the halves (masked when ``mask`` is given, no phase-randomisation correction) -> FSC
    weighting of the average -> Guinier fit of the weighted map from ``low_res`` to the resolution
    -> sharpening by ``-B`` -> low-pass at the resolution with a raised-cosine edge. ``resolution``
    overrides the FSC-0.143 resolution (needed when the "halves" are one map twice).
    """
    vs = as_xyz(voxel_size)
    curve = fsc(half1, half2, vs, mask=mask)
    res = float(resolution) if resolution else curve.resolution(0.143)
    average = 0.5 * (np.asarray(half1, dtype=np.float32) + np.asarray(half2, dtype=np.float32))
    sharp, bfac = sharpen_average(average, vs, res, curve, low_res=low_res)
    return SharpenResult(volume=sharp, bfactor=bfac, resolution=res, fsc=curve)


def sharpen_average(
    average: np.ndarray, voxel_size: float | Sequence[float], resolution: float, curve: FSCCurve | None,
    *, low_res: float = 10.0,
) -> tuple[np.ndarray, float]:
    """The classical map of an average: FSC-weighted by ``curve`` (skipped when None: one map), sharpened by
    the Guinier B fitted from ``low_res`` to ``resolution`` A, low-passed at ``resolution``; ``(map, B)``."""
    vs = as_xyz(voxel_size)
    weighted = fsc_weight(average, vs, curve) if curve is not None else np.asarray(average, dtype=np.float32)
    bfac = fit_bfactor(weighted, vs, low_res=low_res, high_res=resolution)
    sharp = sharpen_lowpass(weighted, vs, -bfac, resolution)
    log.info("Auto-sharpening: resolution %.2f A, Guinier B %.1f A^2 (fit %.3g-%.3g A)", resolution, bfac, low_res,
             resolution)
    return sharp, bfac


def soft_edge(binary: np.ndarray, voxel_size: float | Sequence[float], width: float) -> np.ndarray:
    """Soft mask: 1 inside ``binary``, falling as a raised cosine to 0 over ``width`` A outside it."""
    binary = np.asarray(binary) > 0.5
    if width <= 0 or not binary.any():
        return binary.astype(np.float32)
    vx, vy, vz = as_xyz(voxel_size)
    dist = ndimage.distance_transform_edt(~binary, sampling=(vz, vy, vx))
    return cosine_edge(dist, 0.0, width).astype(np.float32)


def sphere_mask(
    shape: Sequence[int], voxel_size: float | Sequence[float], radius: float, *, edge: float = 0.0
) -> np.ndarray:
    """Spherical mask of ``radius`` A around the box centre, with a raised-cosine edge of ``edge`` A."""
    vx, vy, vz = as_xyz(voxel_size)
    z, y, x = (np.arange(n) - n // 2 for n in shape)
    r = np.sqrt((z[:, None, None] * vz) ** 2 + (y[None, :, None] * vy) ** 2 + (x[None, None, :] * vx) ** 2)
    if edge <= 0:
        return (r <= radius).astype(np.float32)
    return cosine_edge(r, radius, edge).astype(np.float32)
