"""Automatic solvent-cube skipping: which cubes the molecule envelope skips, what the output keeps, and the
pure-noise checks that must run every cube."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from deepemhancer_engine.config import EnhanceConfig, InferenceConfig, TilingConfig
from deepemhancer_engine.inference import SKIP_MARGIN, predict_volume, solvent_cubes
from deepemhancer_engine.model import UNet3D
from deepemhancer_engine.normalize import ENVELOPE_BIN, grow_blocks, molecule_blocks
from deepemhancer_engine.runner import NetworkRunner
from deepemhancer_engine.tiling import TileGrid, _block_share, split_by_envelope, split_by_mask

STD = 0.1  # the normalised noise level


def ball_map(shape=(96, 96, 128), centre=(30, 34, 36), radius=8.0, noise=STD, seed=5):
    """Normalised noise of std ``noise`` with a solid ball of density 1 (10 noise stds): ``(map, ball)``."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(0.0, noise, shape).astype(np.float32) if noise else np.zeros(shape, np.float32)
    zz, yy, xx = np.indices(shape)
    ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2
    vol[ball] += 1.0
    return vol, ball


def cube_distance(start, tile, points) -> float:
    """Smallest distance (voxels) from any voxel of the cube at ``start`` to any of ``points`` (N, 3)."""
    lo, hi = np.array(start), np.array(start) + tile - 1
    gap = np.maximum(np.maximum(lo - points, points - hi), 0)
    return float(np.sqrt((gap**2).sum(1)).min())


def tiny_runner():
    torch.manual_seed(0)
    return NetworkRunner(UNet3D(filters=(2, 4, 8)), torch.device("cpu"), batch_size=4, amp="off")


def test_skipped_cubes_are_those_without_molecule_within_the_margin():
    vol, ball = ball_map()
    grid = TileGrid.from_shape(vol.shape, 32, 16)
    needed, skipped = solvent_cubes(vol, STD, grid, "gaussian")
    points = np.argwhere(ball)
    # Every cube touching the ball runs; every cube farther than the margin plus the block rounding is skipped.
    slack = 2 * ENVELOPE_BIN
    for start in grid.iter_starts():
        d = cube_distance(start, grid.tile, points)
        if d == 0:
            assert start in needed, (start, d)
        elif d > SKIP_MARGIN + slack:
            assert start in skipped, (start, d)
    assert len(needed) + len(skipped) == grid.n_tiles and len(skipped) > grid.n_tiles // 2


def test_split_by_envelope_known_answers():
    """No weight loss allowed: the cubes the whole envelope needs; any loss allowed: those the core needs; in
    between, every margin block keeps at least 1 - max_loss of its blending weight, and more cubes are skipped
    than with no loss."""
    vol, _ = ball_map()
    grid = TileGrid.from_shape(vol.shape, 32, 16)
    core = molecule_blocks(vol, STD, 0)
    envelope = grow_blocks(core, SKIP_MARGIN)
    split = functools.partial(split_by_envelope, grid, core, envelope, block=ENVELOPE_BIN)
    assert split(max_loss=0.0) == split_by_mask(grid, envelope, 0.5, block=ENVELOPE_BIN)
    assert split(max_loss=1.0) == split_by_mask(grid, core, 0.5, block=ENVELOPE_BIN)
    needed, skipped = split(max_loss=0.2)
    assert len(split(max_loss=0.0)[1]) < len(skipped) < len(split(max_loss=1.0)[1])
    total, kept = np.zeros(core.shape), np.zeros(core.shape)
    for start in grid.iter_starts():
        sl, w = _block_share(grid, start, ENVELOPE_BIN, "gaussian")
        total[sl] += w
        if start in needed:
            kept[sl] += w
    margin = envelope & ~core
    assert kept[core].min() == pytest.approx(1.0) or np.allclose(kept[core], total[core])
    assert (kept[margin] / total[margin]).min() >= 0.8 - 1e-9
    assert (kept[margin] / total[margin]).min() < 0.95  # the bound is used, not trivially kept


def test_output_on_the_molecule_is_the_unskipped_output():
    vol, ball = ball_map()
    tiling = TilingConfig(tile=32, stride=16)
    run = tiny_runner()
    with torch.inference_mode():
        every, t_every = predict_volume(vol, tiling, run)
        skip, t_skip = predict_volume(vol, tiling, run, solvent_std=STD)
    assert t_every["skipped"] == 0 and t_skip["skipped"] > t_skip["cubes"] > 0
    core = molecule_blocks(vol, STD, 0)
    inside = np.kron(core, np.ones((ENVELOPE_BIN,) * 3, bool))[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
    assert inside[ball].mean() > 0.7  # the ball's rim lies in partly filled blocks: the margin
    np.testing.assert_array_equal(skip[inside], every[inside])
    assert skip[-1, -1, -1] == 0 and every[-1, -1, -1] != 0  # a corner no run cube reaches: the solvent 0


def test_a_map_that_is_all_molecule_skips_nothing():
    rng = np.random.default_rng(2)
    vol = rng.normal(0.0, STD, (64, 64, 64)).astype(np.float32)
    zz = np.indices(vol.shape)[0]
    vol += np.where((zz // 8) % 2 == 0, 1.0, -0.5).astype(np.float32)  # slabs of density everywhere
    grid = TileGrid.from_shape(vol.shape, 32, 16)
    needed, skipped = split_by_mask(grid, molecule_blocks(vol, STD, SKIP_MARGIN), 0.5, block=ENVELOPE_BIN)
    assert skipped == [] and len(needed) == grid.n_tiles


def test_masked_map_with_zero_solvent():
    """A deposited masked map: the solvent is exactly 0 (no noise to measure); everything that is not flat is
    molecule, the far solvent is skipped, the molecule's output is the unskipped one."""
    vol, ball = ball_map(noise=0.0)
    vol[ball] += np.random.default_rng(1).normal(0.0, STD, int(ball.sum())).astype(np.float32)
    tiling = TilingConfig(tile=32, stride=16)
    run = tiny_runner()
    with torch.inference_mode():
        every, _ = predict_volume(vol, tiling, run)
        skip, t_skip = predict_volume(vol, tiling, run, solvent_std=STD)
    assert t_skip["skipped"] > t_skip["cubes"] > 0
    np.testing.assert_array_equal(skip[ball], every[ball])


def test_pure_noise_would_skip_everything_but_the_noise_checks_run_every_cube(tiny_weights):
    """With default skipping a pure-noise map holds no molecule: every cube would be skipped and the output 0,
    so a noise check would pass by construction. The evaluate noise checks run every cube."""
    from deepemhancer_engine.evaluate import every_cube, make_enhancer, noise_case
    from deepemhancer_engine.noisegen import noise_test_grid

    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, STD, (96, 96, 96)).astype(np.float32)
    grid = TileGrid.from_shape(noise.shape, 32, 16)
    assert not molecule_blocks(noise, STD, SKIP_MARGIN).any()

    config = EnhanceConfig(weights=tiny_weights, inference=InferenceConfig(device="cpu"))
    assert config.inference.skip_solvent
    enhancer = make_enhancer(config, (1.0,) * 3)
    enhancer(noise)
    assert enhancer.loaded.timings["cubes"] == 0 and enhancer.loaded.timings["skipped"] > 0
    assert split_by_mask(grid, molecule_blocks(noise, STD, SKIP_MARGIN), 0.5, block=ENVELOPE_BIN)[0] == []

    assert not every_cube(enhancer).config.inference.skip_solvent
    case = noise_test_grid()[0]
    noise_case(enhancer, case, edge=48)
    assert enhancer.loaded.timings["cubes"] > 0 and enhancer.loaded.timings["skipped"] == 0


def test_no_skip_switch(tmp_path):
    from deepemhancer_engine.cli import build_parser, config_from_args

    parse = build_parser().parse_args
    assert config_from_args(parse(["-i", "a.mrc", "-o", "b.mrc"])).inference.skip_solvent
    assert not config_from_args(parse(["-i", "a.mrc", "-o", "b.mrc", "--no-skip"])).inference.skip_solvent
    with pytest.raises(SystemExit):
        parse(["-i", "a.mrc", "-o", "b.mrc", "--no-skip=1"])
