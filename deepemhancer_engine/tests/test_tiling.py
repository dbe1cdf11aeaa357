"""Exact tests of the cube splitter/merger (house style G6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepemhancer_engine.config import BlendMode, Lattice, TilingConfig
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.tiling import (
    TileGrid,
    TileMerger,
    axis_starts,
    iter_batches,
    pad_to_tile,
    weight_map,
)

BLENDS = [BlendMode.CONSTANT, BlendMode.GAUSSIAN]


def split_merge(volume, tile, stride, blend, predictor, batch_size=3):
    padded, unpad = pad_to_tile(volume, tile)
    grid = TileGrid.from_shape(padded.shape, tile, stride)
    merger = TileMerger(grid, blend)
    for batch, starts in iter_batches(padded, grid, batch_size):
        merger.add(predictor(batch, starts), starts)
    return merger.result()[unpad], merger


# --- starts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, tile, stride, expected",
    [
        (10, 5, 3, [0, 2, 5]),  # n = ceil(5/3)+1 = 3; floor(i*5/2) = 0, 2, 5
        (110, 64, 32, [0, 23, 46]),  # nnU-Net's example
        (64, 64, 16, [0]),  # exactly one cube
        (65, 64, 32, [0, 1]),
        (128, 64, 32, [0, 32, 64]),  # divides exactly: plain stride
        (100, 64, 16, [0, 12, 24, 36]),  # n = ceil(36/16)+1 = 4; floor(i*36/3)
    ],
)
def test_axis_starts_literal(length, tile, stride, expected):
    assert axis_starts(length, tile, stride) == expected


@pytest.mark.parametrize("length", range(32, 140, 7))
@pytest.mark.parametrize("stride", [1, 5, 16, 32])
def test_axis_starts_properties(length, stride):
    s = axis_starts(length, 32, stride)
    assert s[0] == 0 and s[-1] == length - 32
    assert len(s) == math.ceil((length - 32) / stride) + 1
    assert all(0 < b - a <= stride for a, b in zip(s, s[1:]))


@pytest.mark.parametrize(
    "length, stride, align, expected",
    [
        (256, 40, 8, [0, 40, 80, 112, 152, 192]),  # 24 units of 8, n = 6: 8 * round(i * 24 / 5)
        (256, 16, 8, list(range(0, 193, 16))),
        (256, 48, 8, [0, 48, 96, 144, 192]),
        (200, 40, 8, [0, 32, 72, 104, 136]),  # 17 units, n = 5: round(4.25, 8.5, 12.75) = 4, 9, 13
        (72, 40, 8, [0, 8]),
        (64, 40, 8, [0]),
        (256, 40, 16, [0, 32, 80, 112, 160, 192]),  # the default: 6 cubes, all on the stride-16 grid
        (208, 40, 16, [0, 32, 80, 112, 144]),  # 9 units, n = 5: round(2.25, 4.5, 6.75) = 2, 5, 7
        (256, 16, 16, list(range(0, 193, 16))),  # the legacy grid itself
        (256, 48, 16, [0, 48, 96, 144, 192]),
    ],
)
def test_axis_starts_aligned_literal(length, stride, align, expected):
    assert axis_starts(length, 64, stride, align=align) == expected


@pytest.mark.parametrize("units", range(0, 40, 3))
@pytest.mark.parametrize("align, stride", [(8, 8), (8, 13), (8, 16), (8, 40), (8, 56),
                                           (16, 16), (16, 24), (16, 40), (16, 48)])
def test_axis_starts_aligned_properties(units, align, stride):
    length = 64 + align * units
    s = axis_starts(length, 64, stride, align=align)
    assert s[0] == 0 and s[-1] == length - 64
    assert all(v % align == 0 for v in s)
    assert len(s) == math.ceil((length - 64) / stride) + 1  # the count the stride asks for
    assert all(0 < b - a < stride + align for a, b in zip(s, s[1:]))


def test_axis_starts_aligned_refuses_gaps():
    assert axis_starts(34, 10, 8) == [0, 8, 16, 24]  # unaligned: no gap
    with pytest.raises(ValueError, match="leaves gaps"):
        axis_starts(34, 10, 16, align=8)  # 0, 16, 24: 16 > 10


def test_axis_starts_aligned_needs_padding():
    with pytest.raises(ValueError, match="not a multiple of 8"):
        axis_starts(100, 64, 40, align=8)
    with pytest.raises(ValueError, match="larger than the stride"):
        axis_starts(128, 64, 4, align=8)
    a = np.ones((70, 64, 33), np.float32)
    padded, unpad = pad_to_tile(a, 64, align=8)
    assert padded.shape == (72, 64, 64) and unpad[0] == slice(1, 71)  # 70 -> 72: 1 before, 1 after
    np.testing.assert_array_equal(padded[unpad], a)
    assert TileGrid.from_shape(padded.shape, 64, 40, 8).starts == ((0, 8), (0,), (0,))


def test_axis_starts_rejects_short_axis():
    with pytest.raises(ValueError, match="pad it first"):
        axis_starts(20, 32, 16)


def test_grid_geometry():
    grid = TileGrid.from_shape((37, 64, 100), 32, 16)
    # x: span 68, n = ceil(68/16)+1 = 6, floor(i*68/5) = 0, 13, 27, 40, 54, 68
    assert grid.starts == ((0, 5), (0, 16, 32), (0, 13, 27, 40, 54, 68))
    assert grid.n_tiles == 2 * 3 * 6
    assert len(list(grid.iter_starts())) == grid.n_tiles


# --- padding ------------------------------------------------------------------------------------


def test_pad_to_tile_centres_and_undoes():
    a = np.arange(5 * 40 * 7, dtype=np.float32).reshape(5, 40, 7)
    padded, unpad = pad_to_tile(a, 16)
    assert padded.shape == (16, 40, 16)
    assert unpad == (slice(5, 10), slice(0, 40), slice(4, 11))  # (16-5)//2 = 5, (16-7)//2 = 4
    np.testing.assert_array_equal(padded[unpad], a)
    assert padded.sum() == a.sum()  # zeros elsewhere


def test_pad_to_tile_no_copy_when_large_enough():
    a = np.zeros((16, 17, 30), np.float32)
    padded, unpad = pad_to_tile(a, 16)
    assert padded is a and padded[unpad].shape == a.shape


# --- weights ------------------------------------------------------------------------------------


def test_weight_map_gaussian():
    w = weight_map(16, BlendMode.GAUSSIAN)
    assert w.shape == (16, 16, 16) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0) and w.min() >= 1e-3
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1])  # symmetric about the centre
    # separable 1-D profile through the centre pair, sigma = 0.3 * 16 = 4.8, centre 7.5: exp(-0.5 (d/4.8)^2)
    d = np.arange(16) - 7.5
    g = np.exp(-0.5 * (d / 4.8) ** 2)
    g /= g.max()
    np.testing.assert_allclose(w[7, 7, :], np.maximum(g, 1e-3), rtol=1e-6)


def test_weight_map_constant():
    np.testing.assert_array_equal(weight_map(8, "constant"), np.ones((8, 8, 8), np.float32))


# --- split -> merge is exact ---------------------------------------------------------------------

SHAPES = [(37, 50, 64), (33, 33, 33), (32, 32, 32), (13, 20, 7), (32, 45, 19)]


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stride", [8, 16, 32])
def test_identity_and_affine(blend, shape, stride):
    rng = np.random.default_rng(0)
    vol = rng.normal(size=shape).astype(np.float32)
    ident, merger = split_merge(vol, 32, stride, blend, lambda b, s: b)
    np.testing.assert_allclose(ident, vol, atol=1e-5)
    affine, _ = split_merge(vol, 32, stride, blend, lambda b, s: 2 * b + 1)
    np.testing.assert_allclose(affine, 2 * vol + 1, atol=1e-5)
    assert ident.shape == shape and ident.dtype == np.float32
    assert np.all(merger.weight_sum() > 0)  # every voxel has weight


def test_iter_batches_sizes_and_content():
    vol = np.arange(20 * 20 * 30, dtype=np.float32).reshape(20, 20, 30)
    grid = TileGrid.from_shape(vol.shape, 16, 8)
    seen = []
    for batch, starts in iter_batches(vol, grid, 4):
        assert batch.dtype == np.float32 and batch.shape[1:] == (16, 16, 16) and len(batch) == len(starts)
        for cube, (z, y, x) in zip(batch, starts):
            np.testing.assert_array_equal(cube, vol[z:z + 16, y:y + 16, x:x + 16])
        seen += starts
    assert seen == list(grid.iter_starts()) and [len(b) for b, _ in iter_batches(vol, grid, 4)][-1] == 4


# --- hand-computed literals ------------------------------------------------------------------------


def tile_index_predictor(grid):
    index = {s: i for i, s in enumerate(grid.iter_starts())}
    return lambda batch, starts: np.stack([np.full(batch.shape[1:], index[tuple(s)], np.float32) for s in starts])


def run_index(shape, tile, stride, blend):
    vol = np.zeros(shape, np.float32)
    grid = TileGrid.from_shape(shape, tile, stride)
    merger = TileMerger(grid, blend)
    pred = tile_index_predictor(grid)
    for batch, starts in iter_batches(vol, grid, 2):
        merger.add(pred(batch, starts), starts)
    return merger.result()


def test_literal_1d_constant():
    # x axis: length 10, tile 5, stride 3 -> starts 0, 2, 5 (cubes 0, 1, 2); z and y hold one cube.
    out = run_index((5, 5, 10), 5, 3, BlendMode.CONSTANT)
    expected = np.array([0, 0, 0.5, 0.5, 0.5, 1.5, 1.5, 2, 2, 2], np.float32)
    np.testing.assert_allclose(out[2, 2], expected, atol=1e-6)
    np.testing.assert_allclose(out, np.broadcast_to(expected, (5, 5, 10)), atol=1e-6)


def test_literal_1d_gaussian():
    # tile 5: sigma 1.5, centre 2, so a voxel at distance d from a cube centre weighs exp(-(2/9) d^2):
    # a = w(1) = exp(-2/9), b = w(2) = exp(-8/9) (both above the 1e-3 floor). On the central z/y row the
    # z and y factors are 1, so only x weights count.
    a, b = math.exp(-2 / 9), math.exp(-8 / 9)
    expected = np.array(
        [
            0, 0,  # only cube 0
            (0 * 1 + 1 * b) / (1 + b),  # x=2: cube 0 (d=0), cube 1 (d=2)
            0.5,  # x=3: both at d=1
            (0 * b + 1 * 1) / (b + 1),  # x=4: cube 0 (d=2), cube 1 (d=0)
            (1 * a + 2 * b) / (a + b),  # x=5: cube 1 (d=1), cube 2 (d=2)
            (1 * b + 2 * a) / (b + a),  # x=6: cube 1 (d=2), cube 2 (d=1)
            2, 2, 2,
        ]
    )
    out = run_index((5, 5, 10), 5, 3, BlendMode.GAUSSIAN)
    np.testing.assert_allclose(out[2, 2], expected, atol=1e-6)
    assert expected[2] == pytest.approx(0.2913392, abs=1e-6) and expected[5] == pytest.approx(1.339244, abs=1e-5)


def test_literal_3d_constant():
    # shape (5, 7, 8), tile 5, stride 3: z starts [0]; y starts [0, 2]; x starts [0, 3].
    # Cube index = 2 * iy + ix: (y0,x0)=0, (y0,x3)=1, (y2,x0)=2, (y2,x3)=3.
    out = run_index((5, 7, 8), 5, 3, BlendMode.CONSTANT)
    row_y01 = [0, 0, 0, 0.5, 0.5, 1, 1, 1]  # cubes {0}, {0,1}, {1}
    row_y234 = [1, 1, 1, 1.5, 1.5, 2, 2, 2]  # cubes {0,2}, {0,1,2,3}, {1,3}
    row_y56 = [2, 2, 2, 2.5, 2.5, 3, 3, 3]  # cubes {2}, {2,3}, {3}
    plane = np.array([row_y01] * 2 + [row_y234] * 3 + [row_y56] * 2, np.float32)
    np.testing.assert_allclose(out, np.broadcast_to(plane, (5, 7, 8)), atol=1e-6)


# --- constant blending == brute-force uniform averaging ------------------------------------------


def test_constant_stride16_equals_bruteforce_average():
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(70, 64, 90)).astype(np.float32)

    def nonlinear(batch, starts):  # depends on the whole cube, so overlaps disagree
        return batch**2 + batch.mean(axis=(1, 2, 3), keepdims=True) + np.array(starts)[:, :1, None, None]

    out, merger = split_merge(vol, 64, 16, BlendMode.CONSTANT, nonlinear, batch_size=4)
    # reference: every cube written into its own NaN volume, then nanmean over cubes
    grid = merger.grid
    stack = np.full((grid.n_tiles,) + vol.shape, np.nan)
    for i, start in enumerate(grid.iter_starts()):
        cube = vol[grid.slices(start)].astype(np.float64)[None]
        stack[(i,) + grid.slices(start)] = nonlinear(cube, [start])[0]
    reference = np.nanmean(stack, axis=0)
    assert grid.starts == ((0, 6), (0,), (0, 13, 26))
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


def test_merger_rejects_incomplete_and_bad_batches():
    grid = TileGrid.from_shape((16, 16, 24), 16, 8)
    merger = TileMerger(grid, BlendMode.GAUSSIAN)
    with pytest.raises(ValueError, match="does not match"):
        merger.add(np.zeros((2, 16, 16, 16)), [(0, 0, 0)])
    merger.add(np.zeros((1, 1, 16, 16, 16)), [(0, 0, 0)])
    with pytest.raises(RuntimeError, match="1 of 2 cubes"):
        merger.result()


# --- fcc lattice -----------------------------------------------------------------------------------


@pytest.mark.parametrize("per_axis, expected", [(1, 1), (2, 8), (3, 14), (6, 112), (7, 172)])
def test_fcc_lattice_counts(per_axis, expected):
    # even index sums: ceil(n^3 / 2); with an even count per axis (n - 1 odd) the corners of odd index sum
    # (one or three indices at n - 1: 4 of them) are added, as nothing else covers them
    length = 64 + 32 * (per_axis - 1)
    grid = TileGrid.from_shape((length,) * 3, 64, 32, 16, "fcc")
    assert [len(s) for s in grid.starts] == [per_axis] * 3
    assert grid.n_tiles == expected == len(list(grid.iter_starts()))
    cubic = TileGrid.from_shape((length,) * 3, 64, 32, 16)
    assert set(grid.iter_starts()) <= set(cubic.iter_starts()) and cubic.n_tiles == per_axis ** 3


@pytest.mark.parametrize("shape", [(64, 64, 64), (96, 128, 208), (80, 64, 112), (256, 96, 176), (48, 64, 80)])
@pytest.mark.parametrize("tile, stride, align", [(64, 32, 16), (64, 24, 16), (32, 16, 8), (16, 8, 8)])
def test_fcc_lattice_covers_and_blends_exactly(shape, tile, stride, align):
    vol = np.random.default_rng(7).random(shape).astype(np.float32)
    padded, unpad = pad_to_tile(vol, tile, align=align)
    grid = TileGrid.from_shape(padded.shape, tile, stride, align, "fcc")
    assert grid.n_tiles <= math.ceil(math.prod(len(s) for s in grid.starts) / 2) + 4
    merger = TileMerger(grid, BlendMode.GAUSSIAN)
    for batch, starts in iter_batches(padded, grid, 5):
        merger.add(batch, starts)
    np.testing.assert_allclose(merger.result()[unpad], vol, rtol=1e-5)  # identity in, identity out


def test_fcc_lattice_refuses_sparse_starts():
    with pytest.raises(ValueError, match="at most 32 voxels apart"):
        TileGrid.from_shape((160, 64, 64), 64, 48, 16, "fcc")
    with pytest.raises(InputError, match="at most half the cube"):
        TilingConfig(stride=40, lattice="fcc")


def test_lattice_defaults():
    assert TilingConfig().cube_lattice is Lattice.FCC and TilingConfig().stride == 32
    assert TilingConfig(stride=16, blend="constant").cube_lattice is Lattice.CUBIC  # the original's setting
    assert TilingConfig(stride=40).cube_lattice is Lattice.CUBIC  # too sparse for fcc
    assert TilingConfig(lattice="cubic").cube_lattice is Lattice.CUBIC
    assert TilingConfig(stride=16, blend="constant", lattice="fcc").cube_lattice is Lattice.FCC
    with pytest.raises(InputError, match="did you mean"):
        TilingConfig(lattice="fc")
