"""Fourier resampling between the input grid and the network's working grid (1 Å/voxel).

The spectrum is cropped or zero-padded per axis, so voxel ``[0, 0, 0]`` keeps its physical
position (no sub-voxel shift, unlike a zoom about the box centre) and a band-limited map survives
a round trip to numerical precision. Even-size Nyquist bins are split (padding) or folded
(cropping) symmetrically so the result stays real and the round trip is exact. The mean density
is preserved. Work is done in float32/complex64.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.fft

log = logging.getLogger(__name__)

Shape3 = tuple[int, int, int]
Triple = tuple[float, float, float]

#: Voxel sizes within this distance (Å) of the target are not resampled.
SKIP_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ResampleInfo:
    """What :func:`from_working_grid` needs to undo :func:`to_working_grid`.

    Attributes
    ----------
    original_shape, working_shape : (nz, ny, nx) before / after resampling.
    original_voxel_size, working_voxel_size : (x, y, z) Å; the working size is the exact one
        (box extent / new size), within half a voxel per box of the target.
    """

    original_shape: Shape3
    working_shape: Shape3
    original_voxel_size: Triple
    working_voxel_size: Triple

    @property
    def identity(self) -> bool:
        """True when no resampling was done."""
        return self.original_shape == self.working_shape and (
            self.original_voxel_size == self.working_voxel_size
        )


def _resize_full_axis(spec: npt.NDArray[np.complex64], axis: int, m: int) -> npt.NDArray[np.complex64]:
    """Crop or zero-pad a full (complex FFT) axis of length n to m, frequency 0 at index 0."""
    n = spec.shape[axis]
    if m == n:
        return spec
    spec = np.moveaxis(spec, axis, 0)
    out = np.zeros((m,) + spec.shape[1:], dtype=spec.dtype)
    if m > n:
        h = (n + 1) // 2  # frequencies 0 .. h-1 (non-negative); the rest are negative
        out[:h] = spec[:h]
        out[m - (n - h):] = spec[h:]
        if n % 2 == 0:  # split the Nyquist bin between +n/2 and -n/2
            out[m - n // 2] *= 0.5
            out[n // 2] = out[m - n // 2]
    else:
        h = (m + 1) // 2
        out[:h] = spec[:h]
        if m > 1:
            out[h:] = spec[n - (m - h):]
        if m % 2 == 0:  # fold +m/2 onto the new Nyquist bin (-m/2)
            out[m // 2] += spec[m // 2]
    return np.moveaxis(out, 0, axis)


def _resize_half_axis(spec: npt.NDArray[np.complex64], n: int, m: int) -> npt.NDArray[np.complex64]:
    """Crop or zero-pad the last (real FFT, n//2+1 bins) axis from real length n to m."""
    if m == n:
        return spec
    out = np.zeros(spec.shape[:-1] + (m // 2 + 1,), dtype=spec.dtype)
    k = min(n, m) // 2 + 1
    out[..., :k] = spec[..., :k]
    if m > n and n % 2 == 0:
        out[..., n // 2] *= 0.5  # old Nyquist becomes an ordinary bin; its mirror is implicit
    elif m < n and m % 2 == 0:
        # irfftn keeps the Hermitian part of the new Nyquist bin: 2·Y[k, m/2] -> Y[k, m/2] + Y[k, -m/2]
        out[..., m // 2] *= 2.0
    return out


def _fourier_resize(array: npt.NDArray[np.floating], new_shape: Shape3) -> npt.NDArray[np.float32]:
    """Fourier-resample a 3D array to ``new_shape``, preserving the mean."""
    data = np.asarray(array, dtype=np.float32)
    old_shape = data.shape
    spec = scipy.fft.rfftn(data, axes=(0, 1, 2))
    del data
    for axis in (0, 1):
        spec = _resize_full_axis(spec, axis, new_shape[axis])
    spec = _resize_half_axis(spec, old_shape[2], new_shape[2])
    spec *= np.float32(np.prod(new_shape, dtype=np.float64) / np.prod(old_shape, dtype=np.float64))
    out = scipy.fft.irfftn(spec, s=new_shape, axes=(0, 1, 2))
    return np.ascontiguousarray(out, dtype=np.float32)


def to_working_grid(
    array: npt.ArrayLike, voxel_size: Triple, target: float = 1.0
) -> tuple[npt.NDArray[np.float32], ResampleInfo]:
    """Resample a (Z, Y, X) map with voxel size (x, y, z) Å to ``target`` Å/voxel.

    Each axis gets ``max(1, round(n * voxel_size / target))`` voxels. Maps already within 1e-3 Å
    of the target on every axis are returned as a float32 copy with an identity
    :class:`ResampleInfo`.
    """
    data = np.asarray(array)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {data.shape}")
    if not target > 0 or not all(v > 0 for v in voxel_size):
        raise ValueError(f"voxel sizes must be positive, got {tuple(voxel_size)} and target {target}")
    shape: Shape3 = tuple(int(n) for n in data.shape)  # type: ignore[assignment]
    vs_zyx = (voxel_size[2], voxel_size[1], voxel_size[0])
    vs_in: Triple = tuple(float(v) for v in voxel_size)  # type: ignore[assignment]
    if all(abs(v - target) <= SKIP_TOLERANCE for v in vs_in):
        return np.array(data, dtype=np.float32, order="C"), ResampleInfo(shape, shape, vs_in, vs_in)
    new_shape: Shape3 = tuple(max(1, round(n * v / target)) for n, v in zip(shape, vs_zyx))  # type: ignore[assignment]
    new_vs_zyx = [n * v / m for n, v, m in zip(shape, vs_zyx, new_shape)]
    vs_out: Triple = (new_vs_zyx[2], new_vs_zyx[1], new_vs_zyx[0])
    info = ResampleInfo(shape, new_shape, vs_in, vs_out)
    log.debug(
        "resampling %s at %s Å to %s at %s Å/voxel",
        shape, _fmt(vs_in), new_shape, _fmt(vs_out),
    )
    return _fourier_resize(data, new_shape), info


def from_working_grid(array: npt.ArrayLike, info: ResampleInfo) -> npt.NDArray[np.float32]:
    """Undo :func:`to_working_grid`: return a float32 array of exactly ``info.original_shape`` (``array`` itself
    when the grids are the same and it is a C-contiguous float32 array)."""
    data = np.asarray(array)
    if tuple(data.shape) != tuple(info.working_shape):
        raise ValueError(f"array shape {data.shape} differs from the working shape {info.working_shape}")
    if info.identity:
        return np.ascontiguousarray(data, dtype=np.float32)  # no copy: the caller's map is the result
    return _fourier_resize(data, info.original_shape)


def _fmt(values: Triple) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
