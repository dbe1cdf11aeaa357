"""Coloured noise: spectral shape per name, exact std, determinism, seed independence, the test grid."""

from __future__ import annotations

import numpy as np
import pytest

from deepemhancer_engine import metrics
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.noisegen import (
    EVALUATION_SEED_START,
    NOISE_SPECTRA,
    coloured_noise,
    noise_test_grid,
    spectrum_amplitude,
)

SHAPE = (48, 48, 48)
SEED = EVALUATION_SEED_START


def _band_power(volume: np.ndarray, vs: float, n_bands: int = 4) -> np.ndarray:
    """Mean squared radial amplitude in ``n_bands`` equal runs of shells from the first to Nyquist."""
    _, amp = metrics.radial_amplitude(volume, vs)
    return np.array([np.mean(amp[i] ** 2) for i in np.array_split(np.arange(1, len(amp)), n_bands)])


@pytest.mark.parametrize("vs", [0.8, 1.3, 2.0])
def test_radial_power_has_the_named_slope(vs):
    falling, flat, rising, rolloff = (_band_power(coloured_noise(SHAPE, vs, sp, SEED), vs) for sp in NOISE_SPECTRA)
    assert np.all(np.diff(falling) < 0) and falling[-1] < 0.2 * falling[0]
    assert np.max(flat) / np.min(flat) < 1.15
    assert np.all(np.diff(rising) > 0) and rising[-1] > 4.0 * rising[0]
    peak = int(np.argmax(rolloff))
    assert 0 < peak < len(rolloff) - 1  # rises, then falls
    assert rolloff[peak] > 1.5 * rolloff[0] and rolloff[-1] < 0.5 * rolloff[peak]


@pytest.mark.parametrize("spectrum", NOISE_SPECTRA)
def test_radial_amplitude_follows_the_target_shape(spectrum):
    vs = 1.3
    f, amp = metrics.radial_amplitude(coloured_noise(SHAPE, vs, spectrum, SEED + 1), vs)
    target = spectrum_amplitude(spectrum, f, 0.5 / vs)
    sel = (np.arange(len(f)) >= 4) & (target > 0.05 * target.max())  # >= ~200 coefficients per shell
    ratio = amp[sel] / target[sel]
    assert np.max(np.abs(ratio / np.median(ratio) - 1.0)) < 0.1


def test_std_mean_dtype_and_determinism():
    a = coloured_noise(SHAPE, 1.0, "rising", SEED, std=2.5)
    assert a.dtype == np.float32 and a.shape == SHAPE
    assert abs(float(a.std()) - 2.5) < 1e-5 and abs(float(a.mean())) < 1e-5
    np.testing.assert_array_equal(a, coloured_noise(SHAPE, 1.0, "rising", SEED, std=2.5))
    assert not np.array_equal(a, coloured_noise(SHAPE, 1.0, "rising", SEED + 1, std=2.5))
    assert np.all(coloured_noise(SHAPE, 1.0, "flat", SEED, std=0.0) == 0.0)


@pytest.mark.parametrize("spectrum", NOISE_SPECTRA)
def test_two_seeds_are_independent_beyond_10_A(spectrum):
    vs = 1.0
    curve = metrics.fsc(coloured_noise(SHAPE, vs, spectrum, SEED), coloured_noise(SHAPE, vs, spectrum, SEED + 1), vs)
    sel = curve.freq >= 0.1
    assert np.all(np.abs(curve.fsc[sel]) < 3.0 / np.sqrt(curve.n[sel]))


def test_the_evaluation_grid():
    cases = noise_test_grid()
    assert len(cases) == 24
    assert {c.spectrum for c in cases} == set(NOISE_SPECTRA)
    assert sorted({c.voxel_size for c in cases}) == [0.8, 1.3, 2.0]
    assert len({c.seed for c in cases}) == 24 and min(c.seed for c in cases) >= 10_000_000
    assert len({c.name for c in cases}) == 24
    for sp in NOISE_SPECTRA:
        for vs in (0.8, 1.3, 2.0):
            assert sorted(c.replicate for c in cases if c.spectrum == sp and c.voxel_size == vs) == [0, 1]
    c = cases[5]
    np.testing.assert_array_equal(c.generate((16, 16, 16)), coloured_noise((16, 16, 16), c.voxel_size,
                                                                           c.spectrum, c.seed))


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="unknown noise spectrum"):
        coloured_noise(SHAPE, 1.0, "pink", SEED)
    with pytest.raises(InputError, match="3D shape"):
        coloured_noise((8, 8), 1.0, "flat", SEED)
    with pytest.raises(InputError, match="std"):
        coloured_noise(SHAPE, 1.0, "flat", SEED, std=-1.0)
