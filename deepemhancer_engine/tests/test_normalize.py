"""Tests for deepemhancer_engine.normalize: solvent-noise estimation and scaling to std 0.1."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from deepemhancer_engine.config import NormalizationConfig
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.normalize import NormInfo, denormalize, estimate_noise, normalize

N = 64


def _coords():
    z, y, x = np.meshgrid(*[np.arange(N) - N / 2 + 0.5] * 3, indexing="ij")
    return z, y, x


def _blob():
    z, y, x = _coords()
    return 2.0 * np.exp(-(x**2 + y**2 + z**2) / (2 * 7.0**2))


def _hollow_shell():
    """Virus-like capsid: a 5-voxel-thick shell of radius 22, noise inside and outside."""
    z, y, x = _coords()
    r = np.sqrt(x**2 + y**2 + z**2)
    return ndimage.gaussian_filter(((r > 20) & (r < 25)).astype(float), 1.0)


def _rod():
    """Helical-like filament along z spanning the whole box (periodic along z)."""
    z, y, x = _coords()
    rod = (np.sqrt(x**2 + y**2) < 9).astype(float) * (1.0 + 0.4 * np.cos(2 * np.pi * z / 16))
    return ndimage.gaussian_filter(rod, 1.0, mode="wrap")


@pytest.mark.parametrize("make_signal", [_blob, _hollow_shell, _rod])
@pytest.mark.parametrize("noise_std, offset", [(0.1, 0.0), (0.4, 1.5)])
def test_estimate_and_normalize_synthetic(make_signal, noise_std, offset):
    signal = make_signal()
    rng = np.random.default_rng(42)
    vol = (signal + offset + rng.standard_normal(signal.shape) * noise_std).astype(np.float32)
    mean, std = estimate_noise(vol)
    assert abs(std / noise_std - 1) < 0.1
    assert abs(mean - offset) < 0.1 * noise_std
    out, info = normalize(vol, config=NormalizationConfig())
    assert out.dtype == np.float32 and info == NormInfo(mean, std)
    solvent = signal < 1e-3  # includes the inside of the capsid and the sides of the rod
    assert solvent.mean() > 0.5
    assert abs(float(out[solvent].std()) / 0.1 - 1) < 0.1
    assert abs(float(out[solvent].mean())) < 0.01


def test_correlated_noise_large_particle():
    z, y, x = _coords()
    r = np.sqrt(x**2 + y**2 + z**2)
    rng = np.random.default_rng(1)
    signal = ndimage.gaussian_filter((r < 27).astype(float), 1.5) * (1 + 0.5 * rng.standard_normal(r.shape))
    noise = ndimage.gaussian_filter(rng.standard_normal(r.shape), 1.0, mode="wrap")
    noise *= 0.2 / noise.std()
    _, std = estimate_noise((signal + noise).astype(np.float32))
    assert abs(std / 0.2 - 1) < 0.1


def test_stats_mode_and_denormalize():
    vol = np.random.default_rng(0).standard_normal((8, 9, 10)).astype(np.float32) * 3 + 5
    config = NormalizationConfig(mode="stats", noise_mean=5.0, noise_std=3.0)
    out, info = normalize(vol, config=config)
    assert info == NormInfo(5.0, 3.0)
    np.testing.assert_allclose(out, (vol - 5.0) / 3.0 * 0.1, rtol=1e-5, atol=1e-6)
    back = denormalize(out, info, config.target_std)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, vol - 5.0, rtol=1e-5, atol=1e-5)


def test_mask_mode():
    signal = _blob()
    rng = np.random.default_rng(7)
    vol = (signal + rng.standard_normal(signal.shape) * 0.3).astype(np.float32)
    mask = ndimage.gaussian_filter((signal > 0.05).astype(np.float32), 1.0)
    config = NormalizationConfig(mode="mask", mask=Path("m.mrc"))
    out, info = normalize(vol, config=config, mask=mask)
    assert abs(info.std / 0.3 - 1) < 0.05
    assert abs(float(out[mask < 0.01].std()) / 0.1 - 1) < 0.05


def test_mask_mode_errors():
    vol = np.random.default_rng(0).standard_normal((20, 20, 20)).astype(np.float32)
    config = NormalizationConfig(mode="mask", mask=Path("tight.mrc"))
    with pytest.raises(InputError, match=r"mask tight\.mrc: mask values must be within \[0, 1\]"):
        normalize(vol, config=config, mask=np.full(vol.shape, 2.0, np.float32))
    with pytest.raises(InputError, match=r"mask tight\.mrc shape \(20, 20, 19\) differs from map shape"):
        normalize(vol, config=config, mask=np.zeros((20, 20, 19), np.float32))
    with pytest.raises(InputError, match=r"tight\.mrc: mask normalisation needs the mask array"):
        normalize(vol, config=config)
    with pytest.raises(InputError, match=r"only 0 voxels lie outside the mask"):
        normalize(vol, config=config, mask=np.ones(vol.shape, np.float32))
    slightly_off = np.clip(vol, 0, 1) * 1.0005 - 0.0002  # within the 1e-3 tolerance
    normalize(vol, config=config, mask=slightly_off)


def _masked_blob(noise_std=0.1, solvent=0.0, seed=0):
    """The noisy blob with everything beyond radius 14 set to ``solvent`` (a depositor's mask)."""
    z, y, x = _coords()
    vol = _blob() + np.random.default_rng(seed).standard_normal((N, N, N)) * noise_std
    vol[np.sqrt(x**2 + y**2 + z**2) > 14] = solvent
    return vol.astype(np.float32)


@pytest.mark.parametrize("solvent", [0.0, -0.37])
def test_masked_map_noise_from_molecule(solvent, caplog):
    """A flat (masked) solvent says nothing about the noise: the std comes from the molecule's level,
    the same for any noise inside the mask and any solvent value, and a warning names --noiseStats."""
    with caplog.at_level(logging.WARNING, logger="deepemhancer_engine.normalize"):
        mean, std = estimate_noise(_masked_blob(solvent=solvent))
    assert "masked or flattened" in caplog.text and "--noiseStats" in caplog.text
    assert mean == pytest.approx(solvent)
    scaled = estimate_noise(3 * _masked_blob(solvent=solvent) + 5)  # on the input's scale
    assert scaled[0] == pytest.approx(3 * solvent + 5, abs=1e-5) and scaled[1] == pytest.approx(3 * std, rel=0.05)
    assert estimate_noise(_masked_blob(noise_std=0.05, solvent=solvent))[1] == pytest.approx(std, rel=0.15)
    out, _ = normalize(_masked_blob(solvent=solvent), config=NormalizationConfig())
    assert 1.0 < float(out.max()) < 4.0  # the molecule where the network saw it in training, not at 1e5


def test_flat_solvent_with_round_off_at_an_offset():
    """A masked map filtered after masking (e.g. low-passed at its resolution) keeps a flat solvent with a few
    float32 steps of round-off; with the molecule all above it the solvent peak is narrower than 256 histogram
    bins can resolve (numpy refused it: ValueError). The peak is then the solvent, the noise the masked rule's."""
    rng = np.random.default_rng(0)
    level = np.float32(-0.0070932)
    n = 40  # below normalize.BIN_MIN_EDGE: the solvent peak of the unbinned map
    vol = level + (rng.integers(-3, 4, (n, n, n)) * np.spacing(level)).astype(np.float32)
    z, y, x = np.meshgrid(*[np.arange(n) - n / 2 + 0.5] * 3, indexing="ij")
    inside = np.sqrt(x**2 + y**2 + z**2) < 12
    vol[inside] += np.abs(rng.standard_normal(int(inside.sum()))).astype(np.float32) * 1e-3
    mean, std = estimate_noise(vol)
    assert mean == pytest.approx(float(level), abs=1e-8) and std > 0
    out, _ = normalize(vol, config=NormalizationConfig())
    assert np.isfinite(out).all() and 1.0 < float(out.max()) < 10.0


def test_unmasked_map_keeps_its_solvent_noise():
    """The molecule-level fallback never touches maps whose solvent holds real noise, clean or not."""
    rng = np.random.default_rng(1)
    for noise_std in (0.1, 0.02):  # molecule/noise ratio about 20 and 100
        vol = (_blob() + rng.standard_normal((N, N, N)) * noise_std).astype(np.float32)
        assert estimate_noise(vol)[1] == pytest.approx(noise_std, rel=0.1)


def test_pure_noise_keeps_its_noise():
    """No molecule at all (every voxel is solvent): the solvent's std is the answer."""
    vol = np.random.default_rng(2).standard_normal((N, N, N)).astype(np.float32) * 0.3
    assert estimate_noise(vol)[1] == pytest.approx(0.3, rel=0.05)


def test_constant_map_is_rejected():
    with pytest.raises(InputError, match="the map is constant.*--noiseStats"):
        estimate_noise(np.full((N, N, N), 0.5, np.float32))


def test_fallback_without_solvent_warns(caplog):
    z = np.arange(32)[:, None, None] * np.ones((1, 32, 32))
    vol = (np.cos(2 * np.pi * z / 8) + np.random.default_rng(0).standard_normal(z.shape) * 0.1)
    with caplog.at_level(logging.WARNING, logger="deepemhancer_engine.normalize"):
        mean, std = estimate_noise(vol.astype(np.float32))
    assert "solvent voxels found" in caplog.text
    assert np.isfinite(mean) and std > 0


def test_binned_solvent_search_matches_full_resolution(monkeypatch):
    """Odd, non-cubic boxes: the 2x-binned solvent search gives the full-resolution estimate."""
    from deepemhancer_engine import normalize as norm_mod

    rng = np.random.default_rng(3)
    shape = (65, 80, 71)
    z, y, x = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    signal = 1.5 * np.exp(-((x - 5) ** 2 + y**2 + (z + 3) ** 2) / (2 * 9.0**2))
    vol = (signal + 0.7 + rng.standard_normal(shape) * 0.25).astype(np.float32)
    assert min(shape) >= norm_mod.BIN_MIN_EDGE
    binned = estimate_noise(vol)
    monkeypatch.setattr(norm_mod, "BIN_MIN_EDGE", 10**6)
    full = estimate_noise(vol)
    assert abs(binned[1] / full[1] - 1) < 0.02 and abs(binned[0] - full[0]) < 0.02 * 0.25
    assert abs(binned[1] / 0.25 - 1) < 0.05
    mask = norm_mod._unbinned(np.ones((32, 40, 35), bool), shape)
    assert mask.shape == shape and mask.all()
