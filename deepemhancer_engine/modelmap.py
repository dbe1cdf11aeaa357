"""Atomic model -> density map and model masks on the grid of a given map.

The model map is gemmi's electron-scattering density (``DensityCalculatorE``, 5-Gaussian
International Tables C 4.3.2.2 factors, per-atom B-factors plus an optional global ``blur``),
computed on the map's own grid: same shape, voxel size and physical position, taken from the map
header (``GridInfo.effective_origin``: ORIGIN, or NSTART x voxel size when ORIGIN is zero), so
cropped maps with non-zero origins line up with their deposited models. The box is padded while
the density is computed, so atoms near or outside the edge neither wrap round nor are lost.

gemmi is an optional dependency (the ``train`` extra); it is imported only when a model is read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import DeepEMhancerError, InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapGeometry:
    """Where a ``[z, y, x]`` array sits: ``shape``, ``voxel_size`` (x, y, z) A, ``origin`` (x, y, z) A
    = physical position of voxel [0, 0, 0]."""

    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def from_grid(cls, grid: object) -> MapGeometry:
        """From an ``io.GridInfo`` (uses its effective origin) or any object with the three fields."""
        origin = getattr(grid, "effective_origin", None) or getattr(grid, "origin", (0.0, 0.0, 0.0))
        return cls(
            shape=tuple(int(n) for n in grid.shape),  # type: ignore[attr-defined]
            voxel_size=tuple(float(v) for v in grid.voxel_size),  # type: ignore[attr-defined]
            origin=tuple(float(o) for o in origin),
        )


def _gemmi():
    try:
        import gemmi
    except ImportError:  # pragma: no cover - depends on the environment
        raise DeepEMhancerError(
            "atomic models need the gemmi package: pip install 'scipion-em-deepemhancer[train]' "
            "(or pip install gemmi)"
        ) from None
    return gemmi


def read_model(path: str | os.PathLike, *, remove_waters: bool = True):
    """Read a PDB/mmCIF file (optionally gzipped) as a ``gemmi.Structure`` with only its first model,
    no hydrogens and (by default) no waters."""
    gemmi = _gemmi()
    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as err:
        raise InputError(f"{path}: cannot read the atomic model ({err})") from None
    if len(st) == 0:
        raise InputError(f"{path}: the atomic model has no models/atoms")
    while len(st) > 1:
        del st[1]
    st.remove_hydrogens()
    if remove_waters:
        st.remove_waters()
    st.remove_empty_chains()
    if st[0].count_atom_sites() == 0:
        raise InputError(f"{path}: the atomic model has no heavy atoms")
    return st


def _as_structure(model):
    return read_model(model) if isinstance(model, (str, os.PathLike)) else model


def atom_positions(model, geometry: MapGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Atom positions as fractional voxel indices ``(N, 3)`` in ``[z, y, x]`` order, and B-factors."""
    st = _as_structure(model)
    xyz, bs = [], []
    for cra in st[0].all():
        p = cra.atom.pos
        xyz.append((p.x, p.y, p.z))
        bs.append(cra.atom.b_iso)
    xyz_a = np.asarray(xyz, dtype=np.float64)
    idx = (xyz_a - np.asarray(geometry.origin)) / np.asarray(geometry.voxel_size)
    return idx[:, ::-1].copy(), np.asarray(bs, dtype=np.float64)


def mean_bfactor(model) -> float:
    """Mean isotropic B (A^2) of the model's atoms (0 when absent)."""
    st = _as_structure(model)
    bs = [cra.atom.b_iso for cra in st[0].all()]
    return float(np.mean(bs)) if bs else 0.0


def model_map(
    model,
    geometry: MapGeometry,
    *,
    blur: float = 0.0,
    resolution: float | None = None,
    pad: float = 10.0,
) -> np.ndarray:
    """Electron-scattering density of ``model`` (path or gemmi.Structure) on ``geometry``'s grid.

    Args:
        model: PDB/mmCIF path or a structure from :func:`read_model`.
        geometry: target grid (:class:`MapGeometry`, e.g. ``MapGeometry.from_grid(grid_info)``).
        blur: extra isotropic B (A^2) added to every atom.
        resolution: when given, low-pass the map at this resolution (A) with a raised-cosine edge.
        pad: margin (A) added on every side while computing.

    Returns:
        ``[z, y, x]`` float32 array of ``geometry.shape``.
    """
    gemmi = _gemmi()
    st = _as_structure(model).clone()
    vx, vy, vz = geometry.voxel_size
    nz, ny, nx = geometry.shape
    p = [int(np.ceil(pad / v)) for v in (vx, vy, vz)]
    size = (nx + 2 * p[0], ny + 2 * p[1], nz + 2 * p[2])
    shift = gemmi.Position(*(p[i] * geometry.voxel_size[i] - geometry.origin[i] for i in range(3)))
    st[0].transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), gemmi.Vec3(shift.x, shift.y, shift.z)))
    st.cell = gemmi.UnitCell(size[0] * vx, size[1] * vy, size[2] * vz, 90, 90, 90)
    st.spacegroup_hm = "P 1"

    # Sampled on a 2x finer grid with an extra blur that makes aliasing negligible (< 1e-3 at the fine
    # Nyquist), then Fourier-cropped to the target grid and un-blurred: a band-limited map like a
    # structure-factor model map, whatever the atoms' B-factors.
    b_min = min(cra.atom.b_iso for cra in st[0].all())
    anti_alias = max(0.0, 27.6 * max(geometry.voxel_size) ** 2 - b_min - blur)
    calc = gemmi.DensityCalculatorE()
    calc.d_min = 0.0  # keep our grid size; do not derive one from a resolution
    calc.blur = float(blur + anti_alias)
    calc.grid.unit_cell = st.cell
    calc.grid.spacegroup = gemmi.SpaceGroup("P 1")
    calc.grid.set_size(*(2 * n for n in size))
    calc.initialize_grid()
    calc.add_model_density_to_grid(st[0])
    fine = np.array(calc.grid, copy=False).transpose(2, 1, 0)  # [z, y, x]
    dens = _fourier_crop(fine, size[::-1], geometry.voxel_size, anti_alias)
    out = np.ascontiguousarray(dens[p[2]: p[2] + nz, p[1]: p[1] + ny, p[0]: p[0] + nx], dtype=np.float32)
    if resolution:
        from .metrics import lowpass

        out = lowpass(out, geometry.voxel_size, resolution)
    return out


def _fourier_crop(fine: np.ndarray, shape: Sequence[int], voxel_size, unblur: float) -> np.ndarray:
    """Keep the frequencies of a grid of ``shape`` (same cell) and multiply by ``exp(+unblur s^2 / 4)``."""
    import scipy.fft

    f = scipy.fft.rfftn(fine, workers=-1)
    nz, ny, nx = shape
    iz = np.r_[0: (nz + 1) // 2, fine.shape[0] - nz // 2: fine.shape[0]]
    iy = np.r_[0: (ny + 1) // 2, fine.shape[1] - ny // 2: fine.shape[1]]
    g = f[iz][:, iy][:, :, : nx // 2 + 1]
    vx, vy, vz = voxel_size
    s2 = (np.fft.fftfreq(nz, d=vz)[:, None, None] ** 2 + np.fft.fftfreq(ny, d=vy)[None, :, None] ** 2
          + np.fft.rfftfreq(nx, d=vx)[None, None, :] ** 2)
    g = g * np.exp(unblur * s2 / 4.0)
    return scipy.fft.irfftn(g, s=tuple(shape), workers=-1) * (np.prod(shape) / fine.size)


def model_mask(model, geometry: MapGeometry, radius: float, *, soft_edge: float = 0.0) -> np.ndarray:
    """Mask of voxels within ``radius`` A of any atom (binary, or softened over ``soft_edge`` A).

    Atoms outside the box still count for voxels near the edge. Returns float32 ``[z, y, x]``.
    """
    idx, _ = atom_positions(model, geometry)
    vz, vy, vx = geometry.voxel_size[::-1]
    reach = radius + max(soft_edge, 0.0)
    p = [int(np.ceil(reach / v)) + 1 for v in (vz, vy, vx)]
    shape = tuple(n + 2 * q for n, q in zip(geometry.shape, p))
    seeds = np.ones(shape, dtype=bool)  # True = not an atom
    ijk = np.rint(idx + np.asarray(p)).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.asarray(shape)), axis=1)
    ijk = ijk[inside]
    seeds[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = False
    if seeds.all():
        log.warning("model_mask: no atom lies within %.1f A of the box; the mask is empty", reach)
        return np.zeros(geometry.shape, dtype=np.float32)
    dist = ndimage.distance_transform_edt(seeds, sampling=(vz, vy, vx))
    dist = dist[p[0]: p[0] + geometry.shape[0], p[1]: p[1] + geometry.shape[1], p[2]: p[2] + geometry.shape[2]]
    if soft_edge <= 0:
        return (dist <= radius).astype(np.float32)
    t = np.clip((dist - radius) / soft_edge, 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)


def fraction_inside(model, geometry: MapGeometry) -> float:
    """Fraction of atoms whose position lies inside the box (a quick check of the placement)."""
    idx, _ = atom_positions(model, geometry)
    inside = np.all((idx >= -0.5) & (idx <= np.asarray(geometry.shape) - 0.5), axis=1)
    return float(inside.mean()) if idx.size else 0.0


def model_geometry_box(model, voxel_size: float | Sequence[float], margin: float = 10.0) -> MapGeometry:
    """A box around the model's atoms with ``margin`` A on every side (used by tests and tools)."""
    st = _as_structure(model)
    xyz = np.array([(c.atom.pos.x, c.atom.pos.y, c.atom.pos.z) for c in st[0].all()])
    vs = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    lo = xyz.min(axis=0) - margin
    n = np.ceil((xyz.max(axis=0) + margin - lo) / vs).astype(int)
    n += n % 2
    return MapGeometry(
        shape=(int(n[2]), int(n[1]), int(n[0])),
        voxel_size=tuple(float(v) for v in vs),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in lo),  # type: ignore[arg-type]
    )
