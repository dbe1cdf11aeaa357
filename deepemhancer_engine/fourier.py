"""Fourier-space helpers shared by the metrics, the pipeline, the model maps and the simulator.

One voxel-size parser, one frequency grid and one raised-cosine edge (:func:`cosine_edge`, also the
soft edge of the masks), so that "the resolution limit", "the low-pass of the model map" and "the
band of a training target" mean the same filter everywhere. Conventions: arrays ``[z, y, x]``, voxel
sizes ``(x, y, z)`` in A, frequencies in 1/A on the half (``rfftn``) grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from .errors import InputError

Triple = tuple[float, float, float]


def as_xyz(voxel_size: float | Sequence[float]) -> Triple:
    """``(x, y, z)`` voxel size in A from one number or three; positive and finite.

    Example:
        >>> as_xyz(1.5), as_xyz((1, 2, 3))
        ((1.5, 1.5, 1.5), (1.0, 2.0, 3.0))

    Raises:
        InputError: not one or three numbers, or a value that is not positive and finite.
    """
    try:
        if np.ndim(voxel_size) == 0:
            v = float(voxel_size)  # type: ignore[arg-type]
            vs: tuple[float, ...] = (v, v, v)
        else:
            vs = tuple(float(v) for v in voxel_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        vs = ()
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        raise InputError(f"voxel size must be one or three positive numbers (x, y, z) in A, got {voxel_size!r}")
    return vs  # type: ignore[return-value]


def axis_frequencies(shape: Sequence[int], voxel_size: float | Sequence[float], dtype=np.float64
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed frequencies (1/A) along z, y and x of the ``rfftn`` grid of a ``[z, y, x]`` map,
    shaped to broadcast against each other (``fz[:, None, None]`` ...)."""
    nz, ny, nx = (int(n) for n in shape)
    vx, vy, vz = as_xyz(voxel_size)
    fz = np.fft.fftfreq(nz, d=vz).astype(dtype)[:, None, None]
    fy = np.fft.fftfreq(ny, d=vy).astype(dtype)[None, :, None]
    fx = np.fft.rfftfreq(nx, d=vx).astype(dtype)[None, None, :]
    return fz, fy, fx


def frequency_grid(shape: Sequence[int], voxel_size: float | Sequence[float], dtype=np.float64, *,
                   squared: bool = False) -> np.ndarray:
    """|s| (1/A), or |s|^2 with ``squared``, on the ``rfftn`` grid of a ``[z, y, x]`` map.

    Example:
        >>> frequency_grid((4, 4, 4), 2.0).shape, float(frequency_grid((4, 4, 4), 2.0).max())
        ((4, 4, 3), 0.4330127018922193)
    """
    fz, fy, fx = axis_frequencies(shape, voxel_size, dtype)
    s2 = fz**2 + fy**2 + fx**2
    return s2 if squared else np.sqrt(s2)


def frequency_planes(shape: Sequence[int], voxel_size: float | Sequence[float], dtype=np.float64
                     ) -> Iterator[np.ndarray]:
    """|s| (1/A) on the ``rfftn`` grid of a ``[z, y, x]`` map, one Z plane at a time: what
    :func:`frequency_grid` holds, without a volume-sized array (filters applied in place, plane by plane).

    Example:
        >>> [float(p.max()) for p in frequency_planes((2, 4, 4), 1.0)] == [0.5 * 2**0.5, 0.75**0.5]
        True
    """
    fz, fy, fx = axis_frequencies(shape, voxel_size, dtype)
    yx = fy[0] ** 2 + fx[0] ** 2
    for z in fz[:, 0, 0]:
        yield np.sqrt(z * z + yx)


def cosine_edge(x: np.ndarray, start: float, width: float) -> np.ndarray:
    """The one raised-cosine fall-off: 1 up to ``start``, ``0.5 (1 + cos(pi t))`` with
    ``t = (x - start) / width`` over the next ``width``, 0 beyond (``x`` in any unit: 1/A for filters,
    A for mask edges). Computed in the dtype of ``x``.

    Example:
        >>> cosine_edge(np.array([1.0, 2.0, 3.0, 4.0]), 2.0, 2.0).tolist()
        [1.0, 1.0, 0.5, 0.0]
    """
    t = np.clip((np.asarray(x) - start) / width, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def raised_cosine(s: np.ndarray, cutoff: float, width: float) -> np.ndarray:
    """Low-pass response: 1 up to ``cutoff - width / 2``, a raised cosine down to 0 at ``cutoff + width / 2``
    (all in the units of ``s``, usually 1/A). ``width`` 0 is a hard cut at ``cutoff``.

    Example:
        >>> raised_cosine(np.array([0.0, 0.5, 1.0]), 0.5, 0.2).round(12).tolist()
        [1.0, 0.5, 0.0]
    """
    return cosine_edge(s, cutoff - width / 2.0, max(width, 1e-12))


def lowpass_response(s: np.ndarray, resolution: float, width: float) -> np.ndarray:
    """:func:`raised_cosine` centred on ``1 / resolution`` (A); InputError for a resolution that is not
    positive."""
    if not resolution > 0:
        raise InputError(f"low-pass resolution must be positive, got {resolution!r}")
    return raised_cosine(s, 1.0 / resolution, width)


def hermitian_weights(shape: Sequence[int], dtype=np.float64) -> np.ndarray:
    """Weights of the ``rfftn`` coefficients of a ``[z, y, x]`` map, broadcastable to its half grid, so
    that weighted sums over the half transform equal sums over the full one: 2, except 1 on the x = 0
    plane and (even x edge) the Nyquist plane, which have no mirrored twin.

    Example:
        >>> hermitian_weights((4, 4, 4)).ravel().tolist(), hermitian_weights((4, 4, 5)).ravel().tolist()
        ([1.0, 2.0, 1.0], [1.0, 2.0, 2.0])
    """
    nx = int(shape[-1])
    weight = np.full((1, 1, nx // 2 + 1), 2.0, dtype=dtype)
    weight[..., 0] = 1.0
    if nx % 2 == 0:
        weight[..., -1] = 1.0
    return weight
