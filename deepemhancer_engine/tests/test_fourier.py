"""The shared Fourier helpers and the one atomic-write helper."""

from __future__ import annotations

import os

import numpy as np
import pytest

from deepemhancer_engine.errors import InputError
from deepemhancer_engine.fourier import as_xyz, frequency_grid, lowpass_response, raised_cosine
from deepemhancer_engine.io import atomic_write


def test_as_xyz_parses_one_or_three_numbers():
    assert as_xyz(1.5) == (1.5, 1.5, 1.5)
    assert as_xyz(np.array([1, 2, 3])) == (1.0, 2.0, 3.0)
    for bad in ((1.0, 2.0), 0.0, -1.0, float("nan"), float("inf"), "abc"):
        with pytest.raises(InputError, match="voxel size"):
            as_xyz(bad)


def test_frequency_grid_matches_numpy_on_an_anisotropic_box():
    shape, vs = (6, 5, 8), (0.5, 1.0, 2.0)  # x, y, z
    s = frequency_grid(shape, vs)
    fz, fy, fx = np.meshgrid(np.fft.fftfreq(6, 2.0), np.fft.fftfreq(5, 1.0), np.fft.rfftfreq(8, 0.5), indexing="ij")
    np.testing.assert_allclose(s, np.sqrt(fz**2 + fy**2 + fx**2), rtol=0, atol=1e-15)
    np.testing.assert_allclose(frequency_grid(shape, vs, squared=True), s**2, rtol=1e-12)
    assert frequency_grid(shape, vs, np.float32).dtype == np.float32


def test_raised_cosine_known_values():
    s = np.array([0.0, 0.39, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7])
    r = raised_cosine(s, 0.5, 0.2)
    edge = [0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4))]
    np.testing.assert_allclose(r, [1, 1, 1, *edge, 0, 0], atol=1e-12)
    np.testing.assert_array_equal(raised_cosine(s, 0.5, 0.0), (s <= 0.5).astype(float))
    np.testing.assert_allclose(lowpass_response(s, 2.0, 0.2), r)
    with pytest.raises(InputError, match="resolution must be positive"):
        lowpass_response(s, 0.0, 0.1)


def test_atomic_write_replaces_in_one_step_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def fail(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]
    atomic_write(target, lambda tmp: open(tmp, "wb").write(b"new"))
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == 0o666 & ~mask
