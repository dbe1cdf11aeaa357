"""The classical map's shell amplitudes (``postprocess.match_amplitudes``, default with a resolution limit)."""

from __future__ import annotations

import numpy as np
import pytest

from deepemhancer_engine import metrics as M
from deepemhancer_engine.config import EnhanceConfig
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.pipeline import enhance, half_map_fsc, load
from deepemhancer_engine.postprocess import MAX_SHELL_GAIN, match_amplitudes
from deepemhancer_engine.tests.test_cli import blob_map

VS = (1.2, 1.2, 1.2)


def test_known_answer_undoes_a_blur():
    """A map blurred by B = 80 A^2 gets the unblurred map's shell amplitudes back: the blur is a real,
    positive factor per shell, so matching to the sharp map returns it (up to the shells' finite width)."""
    sharp = blob_map((40, 36, 32), seed=1, noise=0.0)
    blurred = M.apply_bfactor(sharp, VS, 80.0)
    out, gain = match_amplitudes(blurred, sharp, VS)
    assert M.rms(out - sharp) < 0.3 * M.rms(blurred - sharp)  # 0.21: a shell is one voxel wide, the blur not flat in it
    assert gain[0] == pytest.approx(1.0, rel=1e-3) and gain[8] > 1.5  # low shells kept, high shells raised


def test_fsc_between_two_outputs_is_the_inputs():
    """A factor per FSC shell leaves the FSC of two matched maps unchanged where both keep power: matching
    adds no agreement between half maps that the inputs lack."""
    truth = blob_map((36, 36, 36), seed=2, noise=0.0)
    rng = np.random.default_rng(3)
    a, b = (truth + rng.normal(0, 0.2, truth.shape).astype(np.float32) for _ in range(2))
    ref_a, ref_b = M.apply_bfactor(a, VS, -40.0), M.apply_bfactor(b, VS, -60.0)
    out_a, ga = match_amplitudes(a, ref_a, VS)
    out_b, gb = match_amplitudes(b, ref_b, VS)
    before, after = M.fsc(a, b, VS), M.fsc(out_a, out_b, VS)
    np.testing.assert_allclose(after.fsc, before.fsc, atol=1e-4)
    assert not np.allclose(ga, gb)


def test_shells_the_reference_leaves_empty_come_out_empty():
    vol = blob_map((40, 40, 40), seed=4, noise=0.1)
    ref = M.lowpass(vol, VS, 6.0, edge_width=0.01)
    out, _ = match_amplitudes(vol, ref, VS)
    s = np.sqrt(sum(f**2 for f in np.meshgrid(*(np.fft.fftfreq(40, 1.2),) * 2, np.fft.rfftfreq(40, 1.2),
                                               indexing="ij")))
    f_out, f_vol = np.abs(np.fft.rfftn(out)), np.abs(np.fft.rfftn(vol))
    beyond = s > 1 / 6.0 + 0.02
    assert f_out[beyond].max() < 1e-4 * f_vol[beyond].max()


def test_offset_and_scale_of_the_reference_change_only_the_scale():
    """A user's map on another scale and offset gives the same output up to that scale: the offset, multiplied
    by the envelope, must not pass for low-resolution power (the robustness sweep's scale cells failed so)."""
    vol = blob_map((36, 36, 36), seed=8, noise=0.05)
    ref = M.apply_bfactor(vol, VS, -50.0)
    weight = np.zeros(vol.shape, np.float32)
    weight[6:30, 6:30, 6:30] = 1.0
    out, gain = match_amplitudes(vol, ref, VS, weight=weight)
    moved, moved_gain = match_amplitudes(vol, 250.0 * ref - 3.0, VS, weight=weight)
    assert gain[0] == moved_gain[0] == 1.0  # the output's mean is its own
    np.testing.assert_allclose(moved_gain[1:], 250.0 * gain[1:], rtol=1e-3)
    np.testing.assert_allclose(moved - moved.mean(), 250.0 * (out - out.mean()), atol=1e-3 * np.abs(moved).max())


def test_gain_is_capped_and_weight_is_used():
    vol = blob_map((32, 32, 32), seed=5, noise=0.05)
    _, gain = match_amplitudes(vol, 1000.0 * vol, VS)
    np.testing.assert_allclose(gain[1:], 1000.0, rtol=1e-4)  # the cap is relative: scale alone passes
    boosted = M.apply_bfactor(vol, VS, -150.0).astype(np.float64)  # the high shells far above the rest
    _, gain = match_amplitudes(vol, boosted, VS)
    overall = float(np.sqrt(boosted.var() / vol.astype(np.float64).var()))
    assert gain.max() == pytest.approx(MAX_SHELL_GAIN * overall, rel=0.05)  # (rfft half-space, no Hermitian weights)
    weight = np.zeros(vol.shape, np.float32)
    weight[8:24, 8:24, 8:24] = 1.0
    ref = vol.copy()
    outside = weight == 0  # the reference differs only where the weight is 0 (shuffled there: the same mean)
    ref[outside] = np.random.default_rng(9).permutation(ref[outside])
    _, g_w = match_amplitudes(vol, ref, VS, weight=weight)
    _, g_all = match_amplitudes(vol, ref, VS)
    np.testing.assert_allclose(g_w[g_w > 0], 1.0, rtol=1e-4)
    assert g_all.max() > 1.5
    with pytest.raises(InputError, match="differ in shape"):
        match_amplitudes(vol, vol[:-1], VS)
    with pytest.raises(InputError, match="weight"):
        match_amplitudes(vol, vol, VS, weight=weight[:-1])


def test_enhance_gives_the_classical_maps_amplitudes(tiny_weights):
    """With a limit, the enhanced map's shell power inside the envelope is the classical map's (the FSC-weighted,
    sharpened average); without the limit, or with --no-match-amplitudes, nothing is matched."""
    truth = blob_map((40, 40, 40), seed=6, noise=0.0)
    rng = np.random.default_rng(7)
    h1, h2 = (truth + rng.normal(0, 0.3, truth.shape).astype(np.float32) for _ in range(2))
    average = 0.5 * (h1 + h2)
    curve = half_map_fsc(h1, h2, VS)
    d = curve.resolution(0.143)
    config = EnhanceConfig(weights=tiny_weights, solvent_envelope=False)
    model = load(config)
    out = enhance(average, VS, config=config, model=model, resolution=d, fsc=curve)
    ref, _ = M.sharpen_average(average, VS, d, curve)
    _, gain = match_amplitudes(out, ref, VS)  # matching a matched map again changes nothing
    below_d = int(40 * 1.2 / d)  # shells up to the limit (beyond, the reference's power is round-off)
    np.testing.assert_allclose(gain[:below_d], 1.0, rtol=1e-3)
    plain = enhance(average, VS, config=EnhanceConfig(weights=tiny_weights, solvent_envelope=False,
                                                      match_amplitudes=False), model=model, resolution=d, fsc=curve)
    assert not np.allclose(out, plain)
    unlimited = EnhanceConfig(weights=tiny_weights, limit_resolution=False)
    np.testing.assert_array_equal(
        enhance(average, VS, config=unlimited, model=model, resolution=d, fsc=curve),
        enhance(average, VS, config=EnhanceConfig(weights=tiny_weights, limit_resolution=False,
                                                  match_amplitudes=False), model=model, resolution=d, fsc=curve))
