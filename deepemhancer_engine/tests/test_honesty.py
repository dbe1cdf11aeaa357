"""In-band honesty check: known answers for a linear enhancer (no excess) and inventing enhancers."""

from __future__ import annotations

import numpy as np
import pytest

from deepemhancer_engine import metrics
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.honesty import band_edges, enhancer_excess, excess_spread, in_band_excess
from deepemhancer_engine.noisegen import EVALUATION_SEED_START, coloured_noise

N, VS, D = 48, 1.0, 3.0
SEEDS = (EVALUATION_SEED_START, EVALUATION_SEED_START + 2)


def _signal() -> np.ndarray:
    """Smooth random blob map: 300 point masses blurred by B = 60 A^2 (Gaussian blobs)."""
    rng = np.random.default_rng(1)
    vol = np.zeros((N, N, N), dtype=np.float32)
    idx = rng.integers(6, N - 6, size=(300, 3))
    vol[idx[:, 0], idx[:, 1], idx[:, 2]] += 1.0
    return metrics.apply_bfactor(vol, VS, 60.0)


def _band_pattern(seed: int) -> np.ndarray:
    """A fixed random map band-limited to 10 A - D."""
    r = np.random.default_rng(seed).standard_normal((N, N, N)).astype(np.float32)
    return metrics.lowpass(r, VS, D) - metrics.lowpass(r, VS, 10.0)


def _linear(x: np.ndarray) -> np.ndarray:
    """A fixed linear enhancer: sharpen by B = -60 A^2 and low-pass at D."""
    return metrics.sharpen_lowpass(x, VS, -60.0, D)


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return _signal()


def _halves(signal: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Signal plus independent rising noise (std 4 x the signal's): half-map FSC about 0.2 near D."""
    std = 4.0 * float(signal.std())
    return (signal + coloured_noise(signal.shape, VS, "rising", seed, std=std),
            signal + coloured_noise(signal.shape, VS, "rising", seed + 1, std=std))


def test_band_edges():
    np.testing.assert_allclose(band_edges(10.0, 5.0, 2), [0.1, 0.15, 0.2])
    np.testing.assert_allclose(band_edges(10.0, 5.0, [10.0, 8.0, 5.0]), [0.1, 0.125, 0.2])
    for bad in ([5.0, 10.0], [3.0]):
        with pytest.raises(InputError, match="decreasing"):
            band_edges(10.0, 5.0, bad)
    with pytest.raises(InputError, match="high < low"):
        band_edges(3.0, 10.0, 2)


def test_a_linear_enhancer_has_no_excess(signal):
    runs = [enhancer_excess(_linear, signal, *_halves(signal, seed), VS, high=D) for seed in SEEDS]
    for r in runs:
        assert r.fsc_halves[-1] < 0.3 and r.fsc_halves[0] > 0.85  # noisy towards D
        assert np.all(np.abs(r.excess) < r.chance), (r.excess, r.chance)
    spread = excess_spread(runs)
    assert spread.runs == 2 and np.all(np.abs(spread.mean) < runs[0].chance)


def _fine_power(x: np.ndarray) -> float:
    """Power finer than 10 A."""
    return float(np.sum((x - metrics.lowpass(x, VS, 10.0)) ** 2))


def test_a_pattern_added_only_to_noisy_inputs_is_flagged(signal):
    pattern = _band_pattern(99)
    pattern *= 0.5 * float(_linear(_halves(signal, SEEDS[0])[0]).std()) / float(pattern.std())  # 1/4 the power
    fine_truth = _fine_power(signal)

    def inventing(x: np.ndarray) -> np.ndarray:
        y = _linear(x)
        noisy = _fine_power(x) > 1.05 * fine_truth  # more fine detail than the truth: "noise to work on"
        return y + pattern if noisy else y

    runs = [enhancer_excess(inventing, signal, *_halves(signal, seed), VS, high=D) for seed in SEEDS]
    for r in runs:
        assert np.all(r.excess > 3.0 * r.chance), (r.excess, r.chance)
        assert r.mean > 0.2 and r.max == float(np.max(r.excess))
    assert np.all(excess_spread(runs).min > 0.1)


def test_what_is_not_counted(signal):
    """Detail in the enhanced truth too, and inventions independent per half, are no shared excess."""
    h1, h2 = _halves(signal, SEEDS[0])
    pattern = _band_pattern(99)
    pattern *= 0.5 * float(_linear(signal).std()) / float(pattern.std())
    e1, e2, truth = _linear(h1), _linear(h2), _linear(signal)
    always = in_band_excess(e1 + pattern, e2 + pattern, truth + pattern, VS, high=D)
    assert np.all(np.abs(always.excess) < always.chance)
    other = _band_pattern(98)
    other *= float(pattern.std()) / float(other.std())
    own = in_band_excess(e1 + pattern, e2 + other, truth, VS, high=D)
    assert np.all(np.abs(own.excess) < own.chance)


def test_bad_inputs_are_refused(signal):
    with pytest.raises(InputError, match="one shape"):
        in_band_excess(signal, signal, signal[:-1], VS, high=D)
    with pytest.raises(InputError, match="Nyquist"):
        in_band_excess(signal, signal, signal, VS, high=1.5)
    with pytest.raises(InputError, match="no coefficient"):
        in_band_excess(signal, signal, signal, VS, high=9.9, bands=50)
    with pytest.raises(InputError, match="same band edges"):
        a = in_band_excess(signal, signal, signal, VS, high=D)
        excess_spread([a, in_band_excess(signal, signal, signal, VS, high=4.0)])
