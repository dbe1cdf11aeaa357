"""The one atomic-model reader, the one model mask and the model-map functions on a GridInfo."""

from __future__ import annotations

import gzip
import itertools
import math

import numpy as np
import pytest

from deepemhancer_engine.atoms import atom_mask, voxel_indices
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.fourier import cosine_edge, raised_cosine
from deepemhancer_engine.io import GridInfo


def _pdb_lines(positions, b=20.0):
    return "".join(
        f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00{b:6.2f}           C\n"
        for i, (x, y, z) in enumerate(positions)
    ) + "END\n"


def test_cosine_edge_is_the_raised_cosine():
    x = np.linspace(-1.0, 5.0, 61)
    np.testing.assert_array_equal(cosine_edge(x, 1.0, 2.0)[x <= 1.0], 1.0)
    np.testing.assert_array_equal(cosine_edge(x, 1.0, 2.0)[x >= 3.0], 0.0)
    assert cosine_edge(np.array([2.0]), 1.0, 2.0)[0] == pytest.approx(0.5)
    np.testing.assert_array_equal(raised_cosine(x, 2.0, 2.0), cosine_edge(x, 1.0, 2.0))
    assert cosine_edge(np.float32([1.5]), 1.0, 2.0).dtype == np.float32


def _brute_force_mask(idx, shape, vs_xyz, radius, edge, outside_atoms):
    """Distance from every voxel centre to the nearest atom voxel, one pair at a time."""
    seeds = np.rint(idx).astype(int)
    if not outside_atoms:
        seeds = seeds[np.all((seeds >= 0) & (seeds < np.array(shape)), axis=1)]
    step = np.array(vs_xyz[::-1])  # z, y, x
    out = np.zeros(shape)
    for ijk in itertools.product(*(range(n) for n in shape)):
        d = min(math.dist(np.array(ijk) * step, s * step) for s in seeds)
        out[ijk] = (d <= radius) if edge <= 0 else float(cosine_edge(np.array(d), radius, edge))
    return out


@pytest.mark.parametrize("outside_atoms", [True, False])
@pytest.mark.parametrize("radius,edge", [(1.6, 0.0), (1.0, 1.5)])
def test_atom_mask_equals_brute_force_distances(outside_atoms, radius, edge):
    shape, vs = (5, 6, 7), (0.9, 1.0, 1.2)  # z, y, x voxels; x, y, z A
    pos = np.array([[2.1, 2.0, 2.3], [4.4, 1.2, 0.4], [-1.3, 3.0, 2.0], [3.0, 6.4, 3.9]])  # x, y, z A
    idx = voxel_indices(pos, (0.0, 0.0, 0.0), vs)  # the 3rd and 4th atoms lie outside the box
    np.testing.assert_allclose(idx[0], [2.3 / 1.2, 2.0, 2.1 / 0.9])
    mask = atom_mask(idx, shape, vs, radius, edge, outside_atoms=outside_atoms)
    assert mask.dtype == np.float32 and mask.shape == shape
    np.testing.assert_allclose(mask, _brute_force_mask(idx, shape, vs, radius, edge, outside_atoms), atol=1e-6)


def test_atom_mask_outside_atoms_reach_into_the_box_only_when_asked(caplog):
    idx = np.array([[2.0, 2.0, -2.0]])  # two voxels beyond the x = 0 face
    inside = atom_mask(idx, (5, 5, 5), 1.0, 2.5)
    assert inside[2, 2, 0] == 1 and inside[2, 2, 1] == 0
    assert not atom_mask(idx, (5, 5, 5), 1.0, 2.5, outside_atoms=False).any()
    assert "no atom lies within" in caplog.text


def test_read_model_errors_are_one_line(tmp_path):
    pytest.importorskip("gemmi")
    from deepemhancer_engine.atoms import read_model
    from deepemhancer_engine.training.simulate import load_atoms

    text = _pdb_lines([(float(i), 0.5 * i, 1.0) for i in range(60)])
    truncated = tmp_path / "cut.pdb.gz"
    cut = text.index("ATOM     31") + 42  # the file ends inside the coordinates of atom 31
    truncated.write_bytes(gzip.compress(text[:cut].encode()))
    empty = tmp_path / "empty.pdb"
    empty.write_text("this is not a model\n")
    waters = tmp_path / "waters.pdb"
    waters.write_text("HETATM    1  O   HOH A   1       1.000   2.000   3.000  1.00 20.00           O\nEND\n")
    for path in (truncated, empty, waters, tmp_path / "missing.cif", tmp_path):
        for reader in (read_model, lambda p: load_atoms(str(p))):
            with pytest.raises(InputError) as err:
                reader(path)
            msg = str(err.value)
            assert msg.startswith(f"{path}: cannot read the atomic model (") and msg.endswith(")"), msg
            assert "\n" not in msg


def test_simulator_refuses_tiny_models(tmp_path):
    pytest.importorskip("gemmi")
    from deepemhancer_engine.training.simulate import load_atoms

    small = tmp_path / "small.pdb"
    small.write_text(_pdb_lines([(float(i), 0.0, 0.0) for i in range(10)]))
    with pytest.raises(InputError, match=r"small.pdb: the atomic model has only 10 heavy atoms"):
        load_atoms(str(small))


def test_model_functions_take_a_grid_info_and_its_effective_origin(tmp_path):
    pytest.importorskip("gemmi")
    from deepemhancer_engine.modelmap import fraction_inside, model_geometry_box, model_map, model_mask

    pdb = tmp_path / "one.pdb"
    pdb.write_text(_pdb_lines([(-10.0 + 2 * 6, -8.0 + 2 * 4, -6.0 + 2 * 3)]))
    grid = GridInfo(shape=(10, 10, 10), voxel_size=(2.0, 2.0, 2.0), nstart=(-5, -4, -3))  # origin 0: NSTART
    assert grid.effective_origin == (-10.0, -8.0, -6.0)
    m = model_map(pdb, grid)
    assert np.unravel_index(np.argmax(m), m.shape) == (3, 4, 6)
    mask = model_mask(pdb, grid, 2.5)
    assert mask[3, 4, 6] == 1 and mask[3, 4, 7] == 1 and mask[3, 4, 8] == 0
    assert fraction_inside(pdb, grid) == 1.0
    box = model_geometry_box(pdb, 1.5, margin=4.5)
    assert isinstance(box, GridInfo) and box.shape == (6, 6, 6) and box.effective_origin == (-2.5, -4.5, -4.5)
