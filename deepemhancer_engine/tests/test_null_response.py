"""Null-response correction: the network's fixed response to pure noise is measured and subtracted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepemhancer_engine import inference
from deepemhancer_engine.cli import build_parser, config_from_args
from deepemhancer_engine.config import TilingConfig
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.inference import Predictor

CPU = torch.device("cpu")
TILE = 16


class PatternNet(nn.Module):
    """Output = a fixed pattern tied to the cube position + ``gain`` x input (a caricature of the
    cube-position bias of a network trained on finite cubes)."""

    def __init__(self, gain: float = 0.0) -> None:
        super().__init__()
        z, y, x = np.indices((TILE, TILE, TILE))
        r = np.sqrt((z - 7.5) ** 2 + (y - 7.5) ** 2 + (x - 7.5) ** 2)
        self.register_buffer("pattern", torch.from_numpy((-0.05 * (r < 5)).astype(np.float32)))
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pattern + self.gain * x


def test_fixed_pattern_removed_exactly():
    vol = np.random.default_rng(0).normal(0, 0.1, (40, 33, 50)).astype(np.float32)
    tiling = TilingConfig(tile=TILE, stride=10)
    raw = Predictor(PatternNet(), CPU, 4, amp="off").predict(vol, tiling)
    assert np.abs(raw).max() > 0.02  # without the correction: a grid of blobs
    fixed = Predictor(PatternNet(), CPU, 4, amp="off", null_std=0.1).predict(vol, tiling)
    np.testing.assert_allclose(fixed, 0.0, atol=1e-6)


def test_linear_part_kept_and_null_deterministic():
    vol = np.random.default_rng(1).normal(0, 1.0, (32, 32, 32)).astype(np.float32)
    tiling = TilingConfig(tile=TILE, stride=8)
    a = Predictor(PatternNet(gain=2.0), CPU, 3, amp="off", null_std=0.1)
    b = Predictor(PatternNet(gain=2.0), CPU, 5, amp="off", null_std=0.1)
    out = a.predict(vol, tiling)
    # null response = pattern + 2 x (mean of the 32 noise cubes): within a few std of the pattern
    null = a.null_response(TILE)
    assert np.abs(null - PatternNet().pattern.numpy()).max() < 5 * 2 * 0.1 / np.sqrt(inference.NULL_CUBES)
    np.testing.assert_array_equal(null, b.null_response(TILE))  # fixed seed, independent of batch size
    assert np.corrcoef(out.ravel(), vol.ravel())[0, 1] > 0.99
    assert a.timings["cubes"] == 27
    assert a.null_response(TILE) is null  # measured once per cube size


def test_off_by_default_in_predictor_and_validated():
    assert Predictor(nn.Identity(), CPU).null_response(TILE) is None
    with pytest.raises(InputError, match="must be positive"):
        Predictor(nn.Identity(), CPU, null_std=0.0)


def test_cli_switch():
    parser = build_parser()
    on = config_from_args(parser.parse_args(["-i", "a.mrc", "-o", "b.mrc"]))
    off = config_from_args(parser.parse_args(["-i", "a.mrc", "-o", "b.mrc", "--no-null-correction"]))
    assert on.inference.null_correction and not off.inference.null_correction


def test_band_limited_null_noise():
    rng = np.random.default_rng(0)
    cubes = inference._band_noise(rng, 3, TILE, (1.0, 0.5, 0.25), 0.1)
    assert cubes.shape == (3, TILE, TILE, TILE) and cubes.dtype == np.float32
    np.testing.assert_allclose(cubes.std(axis=(1, 2, 3)), 0.1, rtol=1e-5)
    power = np.abs(np.fft.fftn(cubes[0])) ** 2
    f = np.abs(np.fft.fftfreq(TILE))
    assert power[:, f > 0.25 + 1e-9, :].max() < 1e-8 * power.sum()  # y: half the Nyquist frequency
    assert power[:, :, f > 0.125 + 1e-9].max() < 1e-8 * power.sum()  # x: a quarter
    p = Predictor(PatternNet(gain=1.0), CPU, 4, amp="off", null_std=0.1)
    white, band = p.null_response(TILE), p.null_response(TILE, (1.0, 0.5, 0.5))
    assert white is p.null_response(TILE, (1.0, 1.0, 1.2))  # at or beyond Nyquist everywhere = white
    assert band is not white and not np.array_equal(band, white)


@pytest.mark.gpu
def test_cuda_null_correction_matches_cpu():
    vol = np.random.default_rng(2).normal(0, 0.3, (40, 36, 50)).astype(np.float32)
    tiling = TilingConfig(tile=TILE, stride=8)
    cpu = Predictor(PatternNet(gain=1.5), CPU, 4, amp="off", null_std=0.1).predict(vol, tiling)
    gpu = Predictor(PatternNet(gain=1.5), torch.device("cuda:0"), 3, amp="off", null_std=0.1).predict(vol, tiling)
    np.testing.assert_allclose(gpu, cpu, atol=1e-5)
