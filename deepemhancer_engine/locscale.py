"""Model-based local sharpening (the LocScale algorithm of Jakobi, Wilmanns & Sachse, eLife 2017).

In a cubic window moved over the map, the radially averaged Fourier amplitude profile of the map is
scaled to that of the model map (per-shell ratio), optionally low-passed at the resolution, and the
centre of the scaled window is kept. The result is a reference sharpening for the evaluation: the
local amplitudes an atomic model says the map should have, with the map's own phases.

For speed the windows are centred on a coarse grid (``step`` voxels apart) instead of on every voxel;
the central ``2 step - 1`` voxels of each scaled window are blended with separable triangle weights,
which sum to exactly one between grid points (trilinear interpolation of the local filters, no block
seams). With ``step`` 1 this is the per-voxel algorithm. Voxels outside the mask are 0, as in LocScale.

Conventions: arrays ``[z, y, x]`` float32, voxel sizes ``(x, y, z)`` in A, frequencies in 1/A.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from .errors import InputError
from .fourier import as_xyz, frequency_grid, hermitian_weights, lowpass_response, raised_cosine

#: Window edge (A) when neither ``window`` nor ``resolution`` is given.
DEFAULT_WINDOW_A = 25.0
#: Window edge in units of the resolution: about 7 Fourier shells between DC and 1 / resolution.
WINDOW_PER_RESOLUTION = 7.0
#: Smallest window edge (voxels); fewer shells give no usable profile.
MIN_WINDOW_VOXELS = 7
#: Centres processed per batch of transforms (memory about 6 x batch x window^3 x 4 bytes).
BATCH = 64


def window_voxels(voxel_size: float | Sequence[float], window: float | None = None,
                  resolution: float | None = None) -> tuple[int, int, int]:
    """Window edge in voxels ``(z, y, x)``, odd so that it has a central voxel.

    ``window`` in A; by default ``7 x resolution`` (about 7 shells up to the resolution, enough for a
    per-shell ratio) or 25 A without a resolution.

    Example:
        >>> window_voxels(1.0, resolution=3.0), window_voxels(1.0)
        ((21, 21, 21), (25, 25, 25))
    """
    vx, vy, vz = as_xyz(voxel_size)
    if window is None:
        window = WINDOW_PER_RESOLUTION * resolution if resolution else DEFAULT_WINDOW_A
    if not (window and math.isfinite(window) and window > 0):
        raise InputError(f"LocScale window must be a positive size in A, got {window!r}")
    sizes = [max(MIN_WINDOW_VOXELS, int(round(window / v))) for v in (vz, vy, vx)]
    return tuple(n if n % 2 else n + 1 for n in sizes)  # type: ignore[return-value]


def default_step(window_shape: Sequence[int]) -> int:
    """Spacing (voxels) of the window centres: a fifth of the window, so that neighbouring windows
    overlap by 80 % and the local filter varies smoothly; at least 1."""
    return max(1, int(round(min(window_shape) / 5.0)))


def _window_taper(window_shape: Sequence[int], step: int) -> np.ndarray:
    """Spherical raised-cosine apodisation of a window, 1 over the blended central block.

    The taper keeps the window's hard faces (periodic wrap) from leaking power into the high shells of
    both profiles; it is flat wherever a kept voxel lies, so a pure rescaling is returned exactly.
    """
    half = [n / 2.0 for n in window_shape]
    axes = [((np.arange(n) - n // 2) / h) for n, h in zip(window_shape, half)]
    rho = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)
    corner = math.sqrt(sum(((step - 1) / h) ** 2 for h in half)) + 1e-6
    flat = max(0.5, corner)
    if flat > 0.8:
        raise InputError(f"LocScale step {step} is too large for a window of {tuple(window_shape)} voxels "
                         f"(at most {int(0.8 * min(half) / math.sqrt(3)) + 1})")
    return raised_cosine(rho, (1.0 + flat) / 2.0, 1.0 - flat).astype(np.float32)


@dataclass(frozen=True)
class _WindowShells:
    """Shell index, Hermitian weight and |s| of a window's ``rfftn`` grid; shells ``1 / L`` wide."""

    shape: tuple[int, int, int]
    index: np.ndarray
    weight: np.ndarray
    s: np.ndarray
    width: float
    n_shells: int

    @classmethod
    def build(cls, shape: tuple[int, int, int], voxel_size: tuple[float, float, float]) -> _WindowShells:
        """Shells of a window of ``shape`` voxels ``(z, y, x)`` with voxel size ``(x, y, z)``."""
        s = frequency_grid(shape, voxel_size)
        width = 1.0 / max(n * v for n, v in zip(shape, reversed(voxel_size)))
        index = np.rint(s / width).astype(np.int64)
        weight = np.ascontiguousarray(np.broadcast_to(hermitian_weights(shape, np.float32), s.shape))
        return cls(shape, index, weight, s, width, int(index.max()) + 1)


def _scale_windows(map_w: np.ndarray, model_w: np.ndarray, shells: _WindowShells,
                   response: np.ndarray | float) -> np.ndarray:
    """Scale each map window's Fourier amplitudes, shell by shell, to the model window's profile.

    ``map_w``/``model_w``: ``(batch, z, y, x)``. The DC shell (one coefficient, the local mean) takes
    the ratio of the first shell: one coefficient is no spectral estimate and a local mean near zero
    would make its ratio unbounded. Shells where the map has (almost) no power get 0.
    """
    axes = (1, 2, 3)
    fm = scipy.fft.rfftn(map_w, axes=axes, workers=-1)
    fr = scipy.fft.rfftn(model_w, axes=axes, workers=-1)
    b, n = map_w.shape[0], shells.n_shells
    idx = (shells.index[None] + n * np.arange(b)[:, None, None, None]).ravel()
    w = shells.weight[None]
    pm = np.bincount(idx, weights=(np.abs(fm) * w).ravel(), minlength=b * n).reshape(b, n)
    pr = np.bincount(idx, weights=(np.abs(fr) * w).ravel(), minlength=b * n).reshape(b, n)
    ok = pm > 1e-6 * pm.max(axis=1, keepdims=True)
    ratio = np.where(ok, pr / np.where(ok, pm, 1.0), 0.0)
    if n > 1:
        ratio[:, 0] = ratio[:, 1]
    fm *= ratio.astype(np.float32)[:, shells.index] * response
    return scipy.fft.irfftn(fm, s=shells.shape, axes=axes, workers=-1).astype(np.float32)


def _centres(shape: Sequence[int], step: int, support: np.ndarray) -> np.ndarray:
    """Window centres ``(k, 3)``: the ``step`` grid covering the box, kept where the blended block
    around a centre touches ``support`` (so every support voxel gets its full weight)."""
    axes = [np.arange(0, n - 1 + step, step) for n in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    near = ndimage.maximum_filter(support, size=2 * step - 1, mode="constant")
    look = np.minimum(grid, np.asarray(shape) - 1)
    return grid[near[look[:, 0], look[:, 1], look[:, 2]]]


def _triangle(step: int) -> np.ndarray:
    """Separable triangle weights ``(2 step - 1)^3``; shifted copies ``step`` apart sum to one."""
    t = (1.0 - np.abs(np.arange(-(step - 1), step)) / step).astype(np.float32)
    return t[:, None, None] * t[None, :, None] * t[None, None, :]


def _check_inputs(volume, model_map, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 map and model map of one 3D shape, and the support (``mask > 0``, else everything)."""
    vol = np.asarray(volume, dtype=np.float32)
    mod = np.asarray(model_map, dtype=np.float32)
    if vol.ndim != 3 or vol.shape != mod.shape:
        raise InputError(f"LocScale needs a 3D map and a model map of the same shape, got {vol.shape} and "
                         f"{mod.shape}")
    if mask is None:
        return vol, mod, np.ones(vol.shape, dtype=bool)
    if np.shape(mask) != vol.shape:
        raise InputError(f"mask shape {np.shape(mask)} differs from map shape {vol.shape}")
    return vol, mod, np.asarray(mask) > 0


def locscale(volume: np.ndarray, model_map: np.ndarray, voxel_size: float | Sequence[float], *,
             window: float | None = None, resolution: float | None = None, mask: np.ndarray | None = None,
             step: int | None = None) -> np.ndarray:
    """Locally scale the map's amplitudes to the model map's (LocScale), windows ``step`` voxels apart.

    Why: a model-based local sharpening is the reference an enhancer should approach where a model
    exists. ``window`` (A) and ``step`` (voxels) default to :func:`window_voxels` and
    :func:`default_step`; with ``resolution`` (A) the scale factors are low-passed there (raised
    cosine one window shell wide). Edges are reflect-padded; voxels outside ``mask > 0`` are 0.
    """
    vol, mod, support = _check_inputs(volume, model_map, mask)
    vs = as_xyz(voxel_size)
    wshape = window_voxels(vs, window, resolution)
    step = default_step(wshape) if step is None else int(step)
    if step < 1:
        raise InputError(f"LocScale step must be at least 1 voxel, got {step}")
    taper = _window_taper(wshape, step)
    shells = _WindowShells.build(wshape, vs)
    response = lowpass_response(shells.s, resolution, shells.width).astype(np.float32) if resolution else 1.0
    centres = _centres(vol.shape, step, support)
    pad = [(w // 2 + step, w // 2 + step) for w in wshape]
    view_v = sliding_window_view(np.pad(vol, pad, mode="reflect"), wshape)
    view_m = sliding_window_view(np.pad(mod, pad, mode="reflect"), wshape)
    k = step - 1
    out = np.zeros(tuple(n + 2 * k + step for n in vol.shape), dtype=np.float32)
    tri = _triangle(step)
    lo = [w // 2 - k for w in wshape]
    for i in range(0, len(centres), BATCH):
        c = centres[i:i + BATCH]
        st = c + step  # window start in the padded map: centre + pad - w // 2
        scaled = _scale_windows(view_v[st[:, 0], st[:, 1], st[:, 2]] * taper,
                                view_m[st[:, 0], st[:, 1], st[:, 2]] * taper, shells, response)
        blocks = scaled[:, lo[0]:lo[0] + 2 * k + 1, lo[1]:lo[1] + 2 * k + 1, lo[2]:lo[2] + 2 * k + 1] * tri
        for (z, y, x), blk in zip(c, blocks):  # block of centre c starts at c in the k-padded output
            out[z:z + 2 * k + 1, y:y + 2 * k + 1, x:x + 2 * k + 1] += blk
    nz, ny, nx = vol.shape
    result = np.ascontiguousarray(out[k:k + nz, k:k + ny, k:k + nx])
    result[~support] = 0.0
    return result
