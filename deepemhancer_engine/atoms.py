"""Atomic models: the one reader, their atoms as arrays, the one model mask and gemmi's density.

Shared by the yardstick model maps (:mod:`deepemhancer_engine.modelmap`, ``deepemhancer evaluate``)
and the training simulator (:mod:`deepemhancer_engine.training.simulate`):

* :func:`read_model`: PDB/mmCIF (optionally gzipped) -> ``gemmi.Structure`` with its first model
  only, no hydrogens and (by default) no waters; any unreadable or atom-less file is one
  :class:`~deepemhancer_engine.errors.InputError` ``"{path}: cannot read the atomic model (...)"``;
* :class:`Atoms`: the same atoms as arrays (positions, elements, B-factors);
* :func:`atom_mask`: voxels within a radius of any atom, binary or with a raised-cosine edge;
* :func:`p1_density`: gemmi's electron-scattering density (``DensityCalculatorE``, 5-Gaussian
  International Tables C 4.3.2.2 factors) of a structure on a P1 grid over its cell.

Positions and origins are ``(x, y, z)`` in A; voxel indices and arrays ``[z, y, x]``. gemmi is an
optional dependency (the ``train`` extra), imported only when a model is read or a density computed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import DeepEMhancerError, InputError
from .fourier import as_xyz, cosine_edge

log = logging.getLogger(__name__)


def gemmi_module():
    """The ``gemmi`` module, or a DeepEMhancerError saying how to install it."""
    try:
        import gemmi
    except ImportError:  # pragma: no cover - depends on the environment
        raise DeepEMhancerError(
            "atomic models need the gemmi package: pip install 'deepemhancer-engine[train]' "
            "(or pip install gemmi)"
        ) from None
    return gemmi


def _unreadable(path: str | os.PathLike, reason: object) -> InputError:
    return InputError(f"{path}: cannot read the atomic model ({' '.join(str(reason).split())})")


def read_model(path: str | os.PathLike, *, remove_waters: bool = True):
    """Read a PDB/mmCIF file (optionally gzipped) as a ``gemmi.Structure`` with only its first model,
    no hydrogens and (by default) no waters.

    Raises:
        InputError: ``"{path}: cannot read the atomic model ({reason})"`` on one line, for a missing
            or unparsable file and for one without (heavy) atoms.
    """
    gemmi = gemmi_module()
    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as err:
        raise _unreadable(path, err) from None
    if len(st) == 0:
        raise _unreadable(path, "no models or atoms in the file")
    while len(st) > 1:
        del st[1]
    st.remove_hydrogens()
    if remove_waters:
        st.remove_waters()
    st.remove_empty_chains()
    if st[0].count_atom_sites() == 0:
        raise _unreadable(path, "no heavy atoms")
    return st


def as_structure(model):
    """``model`` itself if it is a structure, else :func:`read_model` of the path."""
    return read_model(model) if isinstance(model, (str, os.PathLike)) else model


@dataclass(frozen=True)
class Atoms:
    """Heavy atoms of one model as arrays: positions (N, 3) in A, element symbols, B-factors."""

    pos: np.ndarray
    elem: np.ndarray
    b: np.ndarray

    def take(self, keep: np.ndarray) -> "Atoms":
        return Atoms(self.pos[keep], self.elem[keep], self.b[keep])

    @classmethod
    def from_structure(cls, model) -> "Atoms":
        """Every atom of the first model of a structure (or a path, read by :func:`read_model`)."""
        pos, elem, b = [], [], []
        for cra in as_structure(model)[0].all():
            pos.append(cra.atom.pos.tolist())
            elem.append(cra.atom.element.name)
            b.append(cra.atom.b_iso)
        return cls(np.asarray(pos, float).reshape(-1, 3), np.asarray(elem), np.asarray(b, float))


def voxel_indices(pos: np.ndarray, origin: Sequence[float], voxel_size: float | Sequence[float]) -> np.ndarray:
    """Fractional voxel indices ``(N, 3)`` in ``[z, y, x]`` order of positions ``(N, 3)`` (x, y, z) in A,
    for a grid whose voxel [0, 0, 0] lies at ``origin``."""
    idx = (np.asarray(pos, dtype=np.float64) - np.asarray(origin, dtype=np.float64)) / np.asarray(as_xyz(voxel_size))
    return idx[:, ::-1].copy()


def atom_mask(idx: np.ndarray, shape: Sequence[int], voxel_size: float | Sequence[float], radius: float,
              soft_edge: float = 0.0, *, outside_atoms: bool = True) -> np.ndarray:
    """Mask of the voxels within ``radius`` A of any atom: binary, or falling as a raised cosine to 0
    over ``soft_edge`` A beyond it. float32 ``[z, y, x]`` of ``shape``.

    ``idx`` are the atoms' voxel indices (:func:`voxel_indices`); each atom counts at its nearest
    voxel. With ``outside_atoms`` the box is padded by the mask's reach while distances are
    computed, so atoms outside the box still count for voxels near its edge; without, only atoms
    whose nearest voxel lies inside the box count.
    """
    vx, vy, vz = as_xyz(voxel_size)
    sampling = (vz, vy, vx)
    shape = tuple(int(n) for n in shape)
    reach = radius + max(soft_edge, 0.0)
    pad = [int(np.ceil(reach / v)) + 1 for v in sampling] if outside_atoms else [0, 0, 0]
    padded = tuple(n + 2 * q for n, q in zip(shape, pad))
    seeds = np.ones(padded, dtype=bool)  # True = not an atom
    ijk = np.rint(np.asarray(idx, dtype=np.float64) + np.asarray(pad)).astype(np.int64)
    ijk = ijk[np.all((ijk >= 0) & (ijk < np.asarray(padded)), axis=1)]
    seeds[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = False
    if seeds.all():
        log.warning("atom mask: no atom lies within %.1f A of the box; the mask is empty", reach)
        return np.zeros(shape, dtype=np.float32)
    dist = ndimage.distance_transform_edt(seeds, sampling=sampling)
    dist = dist[tuple(slice(q, q + n) for q, n in zip(pad, shape))]
    if soft_edge <= 0:
        return (dist <= radius).astype(np.float32)
    return cosine_edge(dist, radius, soft_edge).astype(np.float32)


def p1_density(structure, grid_size_xyz: Sequence[int], *, d_min: float, blur: float) -> np.ndarray:
    """gemmi's ``DensityCalculatorE`` density of the structure's first model, on a P1 grid of
    ``grid_size_xyz`` points over ``structure.cell`` (periodic: atoms outside the cell wrap round).

    ``d_min`` (A) sets how far each atom's density is summed, not the grid (that is ours); ``blur`` (A^2)
    is added to every atom's B. Returns a ``[z, y, x]`` view of the grid's values.
    """
    gemmi = gemmi_module()
    calc = gemmi.DensityCalculatorE()
    calc.d_min = float(d_min)
    calc.blur = float(blur)
    calc.grid.unit_cell = structure.cell
    calc.grid.spacegroup = gemmi.SpaceGroup("P 1")
    calc.grid.set_size(*(int(n) for n in grid_size_xyz))
    calc.add_model_density_to_grid(structure[0])
    return np.array(calc.grid, copy=False).transpose(2, 1, 0)
