"""Tests for deepemhancer_engine.resample: Fourier crop/pad to the working grid and back."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, signal

from deepemhancer_engine.resample import ResampleInfo, from_working_grid, to_working_grid


def _band_limited(shape, cutoff=0.3, seed=0):
    """Random (z, y, x) map with no frequency above ``cutoff`` cycles/voxel."""
    x = np.random.default_rng(seed).standard_normal(shape)
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(f**2 for f in freqs))
    return np.real(np.fft.ifftn(np.fft.fftn(x) * (radius < cutoff))).astype(np.float32)


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("shape", [(40, 40, 40), (41, 43, 45), (40, 41, 42), (110, 100, 90)])
def test_round_trip_from_coarser_grid(shape):
    x = _band_limited(shape)
    y, info = to_working_grid(x, (1.3, 1.3, 1.3), target=1.0)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    assert y.shape == tuple(round(n * 1.3) for n in shape)
    back = from_working_grid(y, info)
    assert back.shape == shape and back.dtype == np.float32
    assert _rel_err(back, x) < 1e-3


@pytest.mark.parametrize("shape", [(40, 41, 42), (33, 32, 31)])
def test_round_trip_from_finer_grid(shape):
    x = _band_limited(shape, cutoff=0.3)  # below the Nyquist of the 0.8/1.0 coarser grid
    y, info = to_working_grid(x, (0.8, 0.8, 0.8))
    assert y.shape == tuple(round(n * 0.8) for n in shape)
    back = from_working_grid(y, info)
    assert back.shape == shape and _rel_err(back, x) < 1e-3


def test_anisotropic_voxel_size_axes():
    x = _band_limited((30, 40, 50))  # (z, y, x)
    y, info = to_working_grid(x, (1.2, 0.8, 1.5))  # (x, y, z) Å
    assert y.shape == (45, 32, 60)
    np.testing.assert_allclose(info.working_voxel_size, (1.0, 1.0, 1.0), rtol=1e-12)
    assert from_working_grid(y, info).shape == (30, 40, 50)


def test_matches_scipy_signal_resample_with_odd_and_even_sizes():
    x = np.random.default_rng(3).standard_normal((8, 9, 12)).astype(np.float32)  # not band-limited
    y, _ = to_working_grid(x, (1.25, 0.7, 1.5))
    ref = x.astype(np.float64)
    for axis, n in enumerate(y.shape):
        ref = signal.resample(ref, n, axis=axis)
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_mean_preserved_and_constant_map():
    c = np.full((20, 21, 22), 3.5, np.float32)
    y, info = to_working_grid(c, (1.37, 1.37, 1.37))
    np.testing.assert_allclose(y, 3.5, rtol=1e-5)
    np.testing.assert_allclose(from_working_grid(y, info), 3.5, rtol=1e-5)
    x = _band_limited((24, 24, 24)) + 2.0
    y, _ = to_working_grid(x, (0.9, 0.9, 0.9))
    assert abs(float(y.mean()) - float(x.mean())) < 1e-5


def test_skip_when_at_target():
    x = _band_limited((10, 11, 12))
    y, info = to_working_grid(x, (1.0005, 0.9995, 1.0))
    assert info.identity and info.working_shape == (10, 11, 12)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    back = from_working_grid(y, info)
    np.testing.assert_array_equal(back, x)
    assert back is y  # no copy back: the pipeline owns its working map


def _com(a):
    return np.array(ndimage.center_of_mass(a))


def test_no_subvoxel_shift():
    shape = (48, 50, 52)
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    centre = np.array([20.3, 27.6, 24.9])  # voxels, (z, y, x)
    blob = np.exp(-((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) / (2 * 3.0**2))
    vs = 1.37
    y, info = to_working_grid(blob.astype(np.float32), (vs, vs, vs))
    # physical COM (Å) of voxel index * voxel size must not move
    np.testing.assert_allclose(_com(y) * np.array(info.working_voxel_size[::-1]), centre * vs,
                               atol=0.05 * vs)
    np.testing.assert_allclose(_com(from_working_grid(y, info)), centre, atol=0.05)


def test_shape_mismatch_and_bad_input():
    info = ResampleInfo((4, 4, 4), (5, 5, 5), (1.25,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match="working shape"):
        from_working_grid(np.zeros((4, 4, 4), np.float32), info)
    with pytest.raises(ValueError, match="3D"):
        to_working_grid(np.zeros((4, 4), np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        to_working_grid(np.zeros((4, 4, 4), np.float32), (0.0, 1.0, 1.0))
