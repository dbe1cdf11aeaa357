"""Automatic solvent-cube skipping: which cubes the molecule envelope skips, what the output keeps, and the
pure-noise checks that must run every cube."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepemhancer_engine.config import EnhanceConfig, InferenceConfig, TilingConfig
from deepemhancer_engine.inference import SKIP_MARGIN, predict_volume
from deepemhancer_engine.model import UNet3D
from deepemhancer_engine.normalize import ENVELOPE_BIN, molecule_blocks
from deepemhancer_engine.runner import NetworkRunner
from deepemhancer_engine.tiling import TileGrid, split_by_mask

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
    needed, skipped = split_by_mask(grid, molecule_blocks(vol, STD, SKIP_MARGIN), 0.5, block=ENVELOPE_BIN)
    points = np.argwhere(ball)
    # Every cube within the margin runs; every cube farther than the margin plus the block rounding is skipped.
    slack = 2 * ENVELOPE_BIN
    for start in grid.iter_starts():
        d = cube_distance(start, grid.tile, points)
        if d <= SKIP_MARGIN:
            assert start in needed, (start, d)
        elif d > SKIP_MARGIN + slack:
            assert start in skipped, (start, d)
    assert len(needed) + len(skipped) == grid.n_tiles and len(skipped) > grid.n_tiles // 2


def test_output_inside_the_envelope_is_the_unskipped_output():
    vol, ball = ball_map()
    tiling = TilingConfig(tile=32, stride=16)
    run = tiny_runner()
    with torch.inference_mode():
        every, t_every = predict_volume(vol, tiling, run)
        skip, t_skip = predict_volume(vol, tiling, run, solvent_std=STD)
    assert t_every["skipped"] == 0 and t_skip["skipped"] > t_skip["cubes"] > 0
    envelope = molecule_blocks(vol, STD, SKIP_MARGIN)
    inside = np.kron(envelope, np.ones((ENVELOPE_BIN,) * 3, bool))[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
    assert inside[ball].all()
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
