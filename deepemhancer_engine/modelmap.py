"""Atomic model -> density map and model masks on the grid of a given map.

The model map is gemmi's electron-scattering density (:func:`atoms.p1_density`: 5-Gaussian
International Tables C 4.3.2.2 factors, per-atom B-factors plus an optional global ``blur``),
computed on the map's own grid: same shape, voxel size and physical position, taken from the map
header (``GridInfo.effective_origin``: ORIGIN, or NSTART x voxel size when ORIGIN is zero), so
cropped maps with non-zero origins line up with their deposited models. The box is padded while
the density is computed, so atoms near or outside the edge neither wrap round nor are lost.

Every function takes the target grid as an :class:`~deepemhancer_engine.io.GridInfo` (or anything
with ``shape`` (z, y, x), ``voxel_size`` (x, y, z) A and ``effective_origin`` (x, y, z) A). Reading
models and the mask itself live in :mod:`deepemhancer_engine.atoms`; gemmi is an optional dependency
(the ``train`` extra), imported only when a model is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

from .atoms import Atoms, as_structure, atom_mask, gemmi_module, p1_density, read_model, voxel_indices
from .fourier import as_xyz, frequency_grid
from .io import GridInfo

__all__ = ["atom_positions", "fraction_inside", "mean_bfactor", "model_geometry_box", "model_map",
           "model_mask", "read_model"]


def _geometry(grid) -> tuple[tuple[int, int, int], tuple[float, float, float], tuple[float, float, float]]:
    """``shape`` (z, y, x), voxel size and effective origin (x, y, z) A of a grid."""
    shape = tuple(int(n) for n in grid.shape)
    return shape, as_xyz(grid.voxel_size), tuple(float(o) for o in grid.effective_origin)  # type: ignore[return-value]


def atom_positions(model, grid) -> tuple[np.ndarray, np.ndarray]:
    """Atom positions as fractional voxel indices ``(N, 3)`` in ``[z, y, x]`` order, and B-factors."""
    atoms = Atoms.from_structure(model)
    _, vs, origin = _geometry(grid)
    return voxel_indices(atoms.pos, origin, vs), atoms.b


def mean_bfactor(model) -> float:
    """Mean isotropic B (A^2) of the model's atoms (0 when absent)."""
    b = Atoms.from_structure(model).b
    return float(np.mean(b)) if b.size else 0.0


def model_map(model, grid, *, blur: float = 0.0, resolution: float | None = None, pad: float = 10.0) -> np.ndarray:
    """Electron-scattering density of ``model`` (path or gemmi.Structure) on ``grid``.

    Args:
        model: PDB/mmCIF path or a structure from :func:`read_model`.
        grid: target grid (:class:`~deepemhancer_engine.io.GridInfo`).
        blur: extra isotropic B (A^2) added to every atom.
        resolution: when given, low-pass the map at this resolution (A) with a raised-cosine edge.
        pad: margin (A) added on every side while computing.

    Returns:
        ``[z, y, x]`` float32 array of ``grid.shape``.
    """
    gemmi = gemmi_module()
    st = as_structure(model).clone()
    (nz, ny, nx), vs, origin = _geometry(grid)
    p = [int(np.ceil(pad / v)) for v in vs]
    size = (nx + 2 * p[0], ny + 2 * p[1], nz + 2 * p[2])
    shift = [p[i] * vs[i] - origin[i] for i in range(3)]
    st[0].transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), gemmi.Vec3(*shift)))
    st.cell = gemmi.UnitCell(size[0] * vs[0], size[1] * vs[1], size[2] * vs[2], 90, 90, 90)
    st.spacegroup_hm = "P 1"
    # Apart from the simulator's density: a yardstick is padded (no wrap-round) and band-limited like an Fc map.
    # 2x finer grid plus a blur that leaves < 1e-3 at its Nyquist (exp(-27.6 / 4)); cropped and un-blurred below.
    b_min = min(cra.atom.b_iso for cra in st[0].all())
    anti_alias = max(0.0, 27.6 * max(vs) ** 2 - b_min - blur)
    fine = p1_density(st, [2 * n for n in size], d_min=0.0, blur=blur + anti_alias)
    dens = _fourier_crop(fine, size[::-1], vs, anti_alias)
    out = np.ascontiguousarray(dens[p[2]: p[2] + nz, p[1]: p[1] + ny, p[0]: p[0] + nx], dtype=np.float32)
    if resolution:
        from .metrics import lowpass

        out = lowpass(out, vs, resolution)
    return out


def _fourier_crop(fine: np.ndarray, shape: Sequence[int], voxel_size, unblur: float) -> np.ndarray:
    """Keep the frequencies of a grid of ``shape`` (same cell) and multiply by ``exp(+unblur s^2 / 4)``."""
    f = scipy.fft.rfftn(fine, workers=-1)
    nz, ny, nx = shape
    iz = np.r_[0: (nz + 1) // 2, fine.shape[0] - nz // 2: fine.shape[0]]
    iy = np.r_[0: (ny + 1) // 2, fine.shape[1] - ny // 2: fine.shape[1]]
    g = f[iz][:, iy][:, :, : nx // 2 + 1]
    g = g * np.exp(unblur * frequency_grid(shape, voxel_size, squared=True) / 4.0)
    return scipy.fft.irfftn(g, s=tuple(shape), workers=-1) * (np.prod(shape) / fine.size)


def model_mask(model, grid, radius: float, *, soft_edge: float = 0.0) -> np.ndarray:
    """Mask of voxels within ``radius`` A of any atom (binary, or softened over ``soft_edge`` A):
    :func:`atoms.atom_mask` on ``grid``. Atoms outside the box still count for voxels near the edge.
    Returns float32 ``[z, y, x]``."""
    idx, _ = atom_positions(model, grid)
    shape, vs, _ = _geometry(grid)
    return atom_mask(idx, shape, vs, radius, soft_edge)


def fraction_inside(model, grid) -> float:
    """Fraction of atoms whose position lies inside the box (a quick check of the placement)."""
    idx, _ = atom_positions(model, grid)
    inside = np.all((idx >= -0.5) & (idx <= np.asarray(_geometry(grid)[0]) - 0.5), axis=1)
    return float(inside.mean()) if idx.size else 0.0


def model_geometry_box(model, voxel_size: float | Sequence[float], margin: float = 10.0) -> GridInfo:
    """A grid around the model's atoms with ``margin`` A on every side (used by tests and tools)."""
    xyz = Atoms.from_structure(model).pos
    vs = np.asarray(as_xyz(voxel_size))
    lo = xyz.min(axis=0) - margin
    n = np.ceil((xyz.max(axis=0) + margin - lo) / vs).astype(int)
    n += n % 2
    return GridInfo(shape=(int(n[2]), int(n[1]), int(n[0])), voxel_size=tuple(float(v) for v in vs),  # type: ignore[arg-type]
                    origin=tuple(float(o) for o in lo))  # type: ignore[arg-type]
