"""The classical map's shell amplitudes (``postprocess.match_amplitudes``, default with a resolution limit)."""

from __future__ import annotations

import numpy as np
import pytest

from deepemhancer_engine import metrics as M
from deepemhancer_engine.config import EnhanceConfig
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.pipeline import data_envelope, enhance, half_map_fsc, load
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
    assert moved.mean() == pytest.approx(vol.mean(), rel=1e-4)  # the output's mean is its own
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


def _power_beyond(volume: np.ndarray, cutoff: float) -> float:
    """Share of the map's power (mean removed) in shells beyond ``cutoff`` (1/A)."""
    f = np.abs(np.fft.rfftn(volume - volume.mean())) ** 2
    s = np.sqrt(sum(g**2 for g in np.meshgrid(np.fft.fftfreq(volume.shape[0], VS[2]),
                                              np.fft.fftfreq(volume.shape[1], VS[1]),
                                              np.fft.rfftfreq(volume.shape[2], VS[0]), indexing="ij")))
    return float(f[s > cutoff].sum() / f.sum())


def test_enhance_gives_the_classical_maps_amplitudes(tiny_weights):
    """With a limit and the default envelope, the enhanced map's shell power inside the envelope is the classical
    map's (the FSC-weighted, sharpened average); the data beyond the limit come back damped (the envelope's
    product leaves the low-passed reference some power there), and with ``resolution`` nothing is left beyond;
    without the limit, or with --no-match-amplitudes, nothing is matched."""
    truth = blob_map((40, 40, 40), seed=6, noise=0.0)
    rng = np.random.default_rng(7)
    h1, h2 = (truth + rng.normal(0, 0.3, truth.shape).astype(np.float32) for _ in range(2))
    average = 0.5 * (h1 + h2)
    curve = half_map_fsc(h1, h2, VS)
    d = curve.resolution(0.143)
    config = EnhanceConfig(weights=tiny_weights)
    model = load(config)
    out = enhance(average, VS, config=config, model=model, resolution=d, fsc=curve)
    width = 1.0 / (40 * 1.2)
    plain = enhance(average, VS, config=EnhanceConfig(weights=tiny_weights, match_amplitudes=False), model=model,
                    resolution=d, fsc=curve)
    beyond = 1.0 / d + 1.5 * width
    assert 1e-9 < _power_beyond(out, beyond) < _power_beyond(plain, beyond)  # damped, not dropped
    # the default is the former output (the limit, data beyond inside the envelope) matched inside the envelope
    # to the FSC-weighted classical map
    env = data_envelope(average, VS, config=config, model=model, resolution=d, fsc=curve)
    ref, _ = M.sharpen_average(average, VS, d, curve)
    np.testing.assert_allclose(match_amplitudes(plain, ref, VS, weight=env)[0], out, atol=1e-5 * np.abs(out).max())
    cut, _ = match_amplitudes(plain, ref, VS, weight=env, resolution=d)
    assert _power_beyond(cut, beyond) < 1e-9
    unweighted, _ = M.sharpen_average(average, VS, d, None)
    assert not np.allclose(match_amplitudes(plain, unweighted, VS, weight=env)[0], out,
                           atol=1e-3 * np.abs(out).max())
    unlimited = EnhanceConfig(weights=tiny_weights, limit_resolution=False)
    np.testing.assert_array_equal(
        enhance(average, VS, config=unlimited, model=model, resolution=d, fsc=curve),
        enhance(average, VS, config=EnhanceConfig(weights=tiny_weights, limit_resolution=False,
                                                  match_amplitudes=False), model=model, resolution=d, fsc=curve))


def test_one_map_with_a_resolution_and_no_envelope_flag(tiny_weights):
    """One map with --resolution (no FSC curve: the classical map is not FSC-weighted) and --no-solvent-envelope
    (the amplitudes are still measured inside the molecule's envelope) both match."""
    vol = blob_map((40, 40, 40), seed=10, noise=0.3)
    model = load(EnhanceConfig(weights=tiny_weights))
    env = data_envelope(vol, VS, config=EnhanceConfig(weights=tiny_weights), model=model, resolution=6.0)
    assert env is not None
    ref, _ = M.sharpen_average(vol, VS, 6.0, None)
    for flags in ({}, {"solvent_envelope": False}):
        out = enhance(vol, VS, config=EnhanceConfig(weights=tiny_weights, **flags), model=model, resolution=6.0)
        plain = enhance(vol, VS, config=EnhanceConfig(weights=tiny_weights, match_amplitudes=False, **flags),
                        model=model, resolution=6.0)
        np.testing.assert_allclose(match_amplitudes(plain, ref, VS, weight=env)[0], out, atol=1e-5 * np.abs(out).max())


def test_fsc_weight_reads_a_curve_of_another_box_by_frequency():
    """evaluate enhances its noise maps (another box) with the pair's curve: the weights are read at each shell's
    frequency; on the curve's own box they are the curve's."""
    a = blob_map((30, 30, 30), seed=11, noise=0.2)
    b = a + np.random.default_rng(12).normal(0, 0.2, a.shape).astype(np.float32)
    curve = M.fsc(a, b, VS)
    same = M.fsc_weight(a, VS, curve)
    big = blob_map((44, 40, 36), seed=13, noise=0.2)
    weighted = M.fsc_weight(big, VS, curve)  # no IndexError
    assert weighted.shape == big.shape and np.isfinite(weighted).all()
    flat = M.FSCCurve(freq=curve.freq, fsc=np.ones_like(curve.fsc), n=curve.n)  # FSC 1 up to the same Nyquist
    np.testing.assert_allclose(M.fsc_weight(big, VS, flat), M.fsc_weight(big, VS, M.fsc(big, big, VS)), atol=1e-5)
    s = np.sqrt(sum(g**2 for g in np.meshgrid(np.fft.fftfreq(30, 1.2), np.fft.fftfreq(30, 1.2),
                                              np.fft.rfftfreq(30, 1.2), indexing="ij")))
    index = np.rint(s * 30 * 1.2).astype(int)
    index[index >= len(curve.freq)] = -1
    f = np.clip(curve.fsc, 0, 1)
    w = np.append(np.sqrt(2 * f / (1 + f)), 0.0).astype(np.float32)
    expected = np.fft.irfftn(np.fft.rfftn(a) * w[index], s=a.shape, axes=(0, 1, 2))
    np.testing.assert_allclose(same, expected, atol=1e-5)  # the curve's own box: its shells exactly
