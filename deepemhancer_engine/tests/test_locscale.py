"""LocScale local sharpening: known answers on a blob model blurred by a known B-factor or rescaled."""

from __future__ import annotations

import numpy as np
import pytest

from deepemhancer_engine import metrics
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.locscale import _triangle, default_step, locscale, window_voxels

VS = 1.0
N = 48


def _model(seed: int = 1) -> np.ndarray:
    """A model map: 400 point atoms inside the box, blurred by B = 20 A^2."""
    rng = np.random.default_rng(seed)
    vol = np.zeros((N, N, N), dtype=np.float32)
    idx = rng.integers(N // 6, N - N // 6, size=(400, 3))
    vol[idx[:, 0], idx[:, 1], idx[:, 2]] += 1.0
    return metrics.apply_bfactor(vol, VS, 20.0)


@pytest.fixture(scope="module")
def model() -> np.ndarray:
    return _model()


@pytest.fixture(scope="module")
def blurred(model) -> np.ndarray:
    return metrics.apply_bfactor(model, VS, 80.0)


def test_window_and_step_defaults():
    assert window_voxels(1.0, resolution=3.0) == (21, 21, 21)  # 7 x resolution
    assert window_voxels(1.0) == (25, 25, 25)  # 25 A without a resolution
    assert window_voxels((1.0, 1.0, 2.0), window=20.0) == (11, 21, 21)  # (z, y, x), odd
    assert window_voxels(5.0, window=10.0) == (7, 7, 7)  # the smallest window
    assert default_step((25, 25, 25)) == 5
    t = _triangle(3)[2, 2]  # the central row; copies 3 apart sum to one
    np.testing.assert_allclose(t[:-3] + t[3:], 1.0)
    with pytest.raises(InputError, match="window"):
        window_voxels(1.0, window=-3.0)


def test_a_blurred_map_recovers_the_model_profile(model, blurred):
    out = locscale(blurred, model, VS)
    f, a_model = metrics.radial_amplitude(model, VS)
    _, a_out = metrics.radial_amplitude(out, VS)
    _, a_blur = metrics.radial_amplitude(blurred, VS)
    band = (f > 0) & (f <= 0.25)  # to 4 A, where exp(-B s^2 / 4) falls to 0.29
    assert np.max(np.abs(a_out[band] / a_model[band] - 1.0)) < 0.05
    assert np.min(a_blur[band] / a_model[band]) < 0.3
    cc_out, cc_blur = metrics.cc(out, model), metrics.cc(blurred, model)
    assert cc_out > 0.95 and cc_out > cc_blur + 0.2


def test_a_rescaled_model_comes_back_exactly(model):
    out = locscale(3.0 * model, model, VS)
    np.testing.assert_allclose(out, model, rtol=0, atol=1e-5 * float(np.abs(model).max()))


def test_resolution_lowpasses_the_scale_factors(model, blurred):
    out = locscale(blurred, model, VS, resolution=4.0)  # window 28 A -> 29 voxels, edge 1/29 1/A wide
    f, a_model = metrics.radial_amplitude(model, VS)
    _, a_out = metrics.radial_amplitude(out, VS)
    below = (f > 0) & (f <= 0.25 - 2.0 / 29)  # two window shells below the cut-off
    beyond = f >= 0.25 + 2.0 / 29
    assert np.max(np.abs(a_out[below] / a_model[below] - 1.0)) < 0.05
    assert np.max(a_out[beyond] / a_model[beyond]) < 0.05


def test_mask_zeroes_outside_and_leaves_inside_unchanged(model, blurred):
    mask = metrics.sphere_mask(model.shape, VS, 12.0)
    full = locscale(blurred, model, VS, step=4)
    masked = locscale(blurred, model, VS, step=4, mask=mask)
    inside = mask > 0
    assert np.all(masked[~inside] == 0.0)
    np.testing.assert_allclose(masked[inside], full[inside], rtol=0, atol=1e-6)


def test_bad_inputs_are_refused(model):
    with pytest.raises(InputError, match="same shape"):
        locscale(model, model[:-1], VS)
    with pytest.raises(InputError, match="too large"):
        locscale(model, model, VS, step=10)
    with pytest.raises(InputError, match="mask shape"):
        locscale(model, model, VS, mask=np.ones((4, 4, 4)))


def test_the_output_keeps_the_maps_density_not_the_models(model):
    """Only amplitudes are scaled: a map of *other* atoms, blurred, comes back as those atoms sharpened,
    not as the reference model (an implementation that returned the model would fail here)."""
    other = _model(seed=2)
    out = locscale(metrics.apply_bfactor(other, VS, 80.0), model, VS)
    assert metrics.cc(out, other) > 0.9
    assert metrics.cc(out, model) < 0.3
