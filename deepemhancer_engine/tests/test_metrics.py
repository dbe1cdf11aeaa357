"""Every metric against a known answer (docs: deepemhancer_engine/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepemhancer_engine import metrics as M
from deepemhancer_engine.errors import InputError


@pytest.fixture
def noise():
    rng = np.random.default_rng(1234)
    return lambda shape=(40, 36, 32): rng.standard_normal(shape).astype(np.float32)


def _full_fft_fsc(a, b, vs):
    """Reference FSC with the full complex transform and the same shell rule."""
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    fz, fy, fx = (np.fft.fftfreq(n, d=v) for n, v in zip(a.shape, vs[::-1]))
    s = np.sqrt(fz[:, None, None] ** 2 + fy[None, :, None] ** 2 + fx[None, None, :] ** 2)
    width = 1.0 / max(n * v for n, v in zip(a.shape, vs[::-1]))
    idx = np.rint(s / width).astype(int)
    n = int(math.floor(0.5 / max(vs) / width + 1e-6)) + 1
    out = []
    for i in range(n):
        sel = idx == i
        num = np.sum(fa[sel] * np.conj(fb[sel])).real
        out.append(num / np.sqrt(np.sum(abs(fa[sel]) ** 2) * np.sum(abs(fb[sel]) ** 2)))
    return np.array(out), np.bincount(idx[idx < n].ravel(), minlength=n)


@pytest.mark.parametrize("shape,vs", [((20, 18, 16), (1.0, 1.0, 1.0)), ((15, 16, 17), (1.2, 1.0, 0.9))])
def test_fsc_matches_full_transform(noise, shape, vs):
    a = noise(shape)
    b = a + noise(shape)
    curve = M.fsc(a, b, vs)
    ref, counts = _full_fft_fsc(a, b, vs)
    np.testing.assert_allclose(curve.fsc, ref, atol=1e-5)
    np.testing.assert_allclose(curve.n, counts)  # Hermitian weights count every coefficient once
    assert curve.freq[-1] <= 0.5 / max(vs) + 1e-9


def test_fsc_of_map_with_itself_is_one_and_with_negative_minus_one(noise):
    a = noise()
    np.testing.assert_allclose(M.fsc(a, a, 1.0).fsc[1:], 1.0, atol=1e-5)
    np.testing.assert_allclose(M.fsc(a, -a, 1.0).fsc[1:], -1.0, atol=1e-5)
    assert M.fsc(a, a, 1.0).resolution(0.143) == pytest.approx(2.0)  # never drops: Nyquist


def test_fsc_of_independent_noise_is_about_zero(noise):
    curve = M.fsc(noise(), noise(), 1.0)
    sel = curve.n > 200
    assert np.all(np.abs(curve.fsc[sel]) < 4 / np.sqrt(curve.n[sel] / 2))
    assert abs(float(np.mean(curve.fsc[sel]))) < 0.03


def test_fsc_of_signal_plus_equal_noise_is_one_half(noise):
    s = noise((48, 48, 48))
    curve = M.fsc(s + noise((48, 48, 48)), s + noise((48, 48, 48)), 1.0)
    assert float(np.mean(curve.fsc[3:])) == pytest.approx(0.5, abs=0.02)


def test_masked_fsc_uses_the_mask(noise):
    a, b = noise(), noise()
    mask = np.zeros(a.shape, np.float32)
    mask[10:30, 10:26, 8:24] = 1
    b2 = np.where(mask > 0, a, b)  # identical inside the mask only
    np.testing.assert_allclose(M.fsc(a, b2, 1.0, mask=mask).fsc[1:], 1.0, atol=1e-5)
    assert M.fsc(a, b2, 1.0).fsc[5:].mean() < 0.5


def test_resolution_interpolates_between_shells():
    curve = M.FSCCurve(freq=np.array([0.0, 0.1, 0.2, 0.3]), fsc=np.array([1.0, 0.8, 0.4, 0.0]), n=np.ones(4))
    assert curve.resolution(0.5) == pytest.approx(1 / 0.175)
    assert curve.resolution(0.143) == pytest.approx(1 / (0.2 + 0.257 / 0.4 * 0.1))
    assert curve.resolution(-0.5) == pytest.approx(1 / 0.3)  # never crosses: last shell
    assert curve.resolution(0.9) == pytest.approx(1 / 0.1)  # below at the first shell


def test_max_fsc_gain_and_beyond():
    freq = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    a = M.FSCCurve(freq, np.array([1, 0.9, 0.6, 0.5, 0.4]), np.ones(5))
    b = M.FSCCurve(freq, np.array([1, 0.9, 0.5, 0.1, 0.0]), np.ones(5))
    assert M.max_fsc_gain(a, b, 1 / 0.2) == pytest.approx(0.4)  # shells 0.3 and 0.4 only
    assert M.max_fsc_beyond(a, 1 / 0.25) == pytest.approx(0.5)
    assert math.isnan(M.max_fsc_beyond(a, 1 / 0.45))


def test_cc_known_values(noise):
    a = noise()
    assert M.cc_box(a, 2 * a + 1) == pytest.approx(1.0)
    assert M.cc(a, -a) == pytest.approx(-1.0)
    mask = np.zeros(a.shape, bool)
    mask[:20] = True
    b = np.where(mask, 3 * a, noise())
    assert M.cc_mask(a, b, mask) == pytest.approx(1.0)
    assert abs(M.cc_box(a, b)) < 0.9
    with pytest.raises(InputError, match="same shape"):
        M.cc(a, a[:-1])


@pytest.mark.parametrize("bfac", [80.0, -40.0])
def test_guinier_fit_recovers_applied_bfactor(noise, bfac):
    white = noise((64, 64, 64))
    blurred = M.apply_bfactor(white, 1.0, bfac)
    assert M.fit_bfactor(blurred, 1.0, low_res=10.0, high_res=3.0) == pytest.approx(bfac, abs=3.0)
    assert M.fit_bfactor(white, 1.0, high_res=3.0) == pytest.approx(0.0, abs=3.0)


def test_guinier_fit_with_no_shells_warns_and_returns_zero(noise):
    assert M.fit_bfactor(noise((16, 16, 16)), 4.0, low_res=10.0, high_res=9.0) == 0.0


def test_bfactor_round_trip_is_identity(noise):
    a = noise()
    back = M.apply_bfactor(M.apply_bfactor(a, 1.0, 40.0), 1.0, -40.0)
    np.testing.assert_allclose(back, a, atol=5e-4)  # float32 transforms


def test_lowpass_keeps_low_and_removes_high_frequencies(noise):
    a = noise((48, 48, 48))
    lp = M.lowpass(a, 1.0, 6.0)  # cut at 1/6, edge 2/48 wide
    freq, amp = M.radial_amplitude(lp, 1.0)
    _, amp0 = M.radial_amplitude(a, 1.0)
    low = freq < 1 / 6 - 1 / 48 - 1e-9
    high = freq > 1 / 6 + 1 / 48 + 1e-9
    np.testing.assert_allclose(amp[low], amp0[low], rtol=1e-4)
    assert np.all(amp[high] < 1e-4 * amp0[high])
    centre = np.argmin(abs(freq - 1 / 6))
    assert amp[centre] / amp0[centre] == pytest.approx(0.5, abs=0.05)  # 0.5 at the cut-off itself


def test_fsc_weight_limits(noise):
    a = M.lowpass(noise(), 1.0, 2.5)  # nothing beyond Nyquist, where the weight is 0
    c = M.fsc(a, a, 1.0)
    np.testing.assert_allclose(M.fsc_weight(a, 1.0, c), a, atol=1e-4)
    zero = M.FSCCurve(c.freq, np.zeros_like(c.fsc), c.n)
    assert np.abs(M.fsc_weight(a, 1.0, zero)).max() < 1e-5
    third = M.FSCCurve(c.freq, np.full_like(c.fsc, 1 / 3), c.n)  # weight sqrt(2/3 / (4/3)) = sqrt(1/2)
    _, amp = M.radial_amplitude(M.fsc_weight(a, 1.0, third), 1.0)
    _, amp0 = M.radial_amplitude(a, 1.0)
    keep = amp0 > 1e-3 * amp0.max()
    keep[0] = False
    np.testing.assert_allclose(amp[keep] / amp0[keep], math.sqrt(0.5), rtol=1e-4)


def test_auto_sharpen_undoes_blur_and_lowpasses(noise):
    white = noise((64, 64, 64))
    blurred = M.apply_bfactor(white, 1.0, 80.0)
    res = M.auto_sharpen(blurred, blurred, 1.0, resolution=3.0)  # one map twice: FSC 1, weight 1
    assert res.bfactor == pytest.approx(80.0, abs=3.0)
    assert res.resolution == 3.0
    freq, amp = M.radial_amplitude(res.volume, 1.0)
    _, amp0 = M.radial_amplitude(white, 1.0)
    ratio = amp / amp0
    band = (freq > 0.1) & (freq < 0.3)
    np.testing.assert_allclose(ratio[band], np.exp((res.bfactor - 80.0) * freq[band] ** 2 / 4), rtol=1e-3)
    assert np.all(ratio[freq > 1 / 3 + 2 / 64] < 1e-4)


def test_auto_sharpen_uses_half_map_fsc(noise):
    s = M.lowpass(noise((48, 48, 48)), 1.0, 5.0) * 5
    h1, h2 = s + noise((48, 48, 48)), s + noise((48, 48, 48))
    res = M.auto_sharpen(h1, h2, 1.0)
    assert 4.0 < res.resolution < 6.5
    assert res.fsc.resolution(0.143) == res.resolution


def test_atom_mask_radius_like_phenix():
    r = [M.atom_mask_radius(d) for d in (1.5, 2.0, 3.0, 4.0, 6.0)]
    assert all(b > a for a, b in zip(r, r[1:]))
    assert 2.0 < M.atom_mask_radius(3.0) < 3.0
    assert M.atom_mask_radius(3.0, 80.0) > M.atom_mask_radius(3.0, 0.0)


def test_sphere_and_soft_masks():
    sphere = M.sphere_mask((40, 40, 40), 1.0, 10.0)
    assert sphere.sum() == pytest.approx(4 / 3 * math.pi * 1000, rel=0.03)
    soft = M.sphere_mask((40, 40, 40), 1.0, 10.0, edge=5.0)
    assert soft[20, 20, 20] == 1.0 and soft[20, 20, 36] == 0.0 and 0 < soft[20, 20, 32] < 1
    binary = np.zeros((20, 20, 20), bool)
    binary[10, 10, 10] = True
    edge = M.soft_edge(binary, 1.0, 4.0)
    assert edge[10, 10, 10] == 1.0 and edge[10, 10, 12] == pytest.approx(0.5) and edge[10, 10, 15] == 0.0


def test_sharpen_lowpass_is_one_transform_and_survives_strong_sharpening(noise):
    a = noise((40, 40, 40))
    np.testing.assert_allclose(M.sharpen_lowpass(a, 1.0, -50.0, 4.0),
                               M.lowpass(M.apply_bfactor(a, 1.0, -50.0), 1.0, 4.0), atol=1e-4)
    white = noise((48, 48, 48))
    blurred = M.apply_bfactor(white, 1.26, 400.0)  # a big B at low resolution (regression: float32 blow-up)
    res = M.auto_sharpen(blurred, blurred, 1.26, resolution=6.3)
    assert res.bfactor == pytest.approx(400.0, rel=0.1)
    assert M.cc(res.volume, M.lowpass(white, 1.26, 6.3)) > 0.98


def _regions(shape=(20, 20, 20)):
    molecule = np.zeros(shape, bool)
    molecule[5:10, 5:10, 5:10] = True
    solvent = np.zeros(shape, bool)
    solvent[14:, :, :] = True
    return molecule, solvent


def test_solvent_ratio_known_case():
    """Solvent at c +- s (alternating), molecule at c + a: the ratio is s / a whatever the offset c and scale."""
    molecule, solvent = _regions()
    vol = np.full(molecule.shape, 7.0)
    signs = np.where(np.indices(molecule.shape).sum(axis=0) % 2 == 0, 1.0, -1.0)
    vol[solvent] += 0.5 * signs[solvent]
    vol[molecule] += 4.0
    assert M.solvent_ratio(vol, molecule, solvent) == pytest.approx(0.5 / 4.0, rel=1e-3)
    assert M.solvent_ratio(3.0 * vol - 2.0, molecule, solvent) == pytest.approx(0.5 / 4.0, rel=1e-3)
    clean = np.where(solvent, 7.0, vol)
    assert M.solvent_ratio(clean, molecule, solvent) == 0.0
    assert math.isnan(M.solvent_ratio(vol, molecule, np.zeros_like(solvent)))


def test_intensity_ratio_known_case():
    molecule, solvent = _regions()
    vol = np.random.default_rng(0).normal(size=molecule.shape) + 5.0 * molecule
    assert M.intensity_ratio(2.5 * vol + 9.0, vol, molecule, solvent) == pytest.approx(2.5)
    assert M.intensity_ratio(vol, vol, molecule, solvent) == pytest.approx(1.0)
    with pytest.raises(InputError):
        M.intensity_ratio(vol, vol[:-1], molecule, solvent)


def test_solvent_distance():
    assert M.solvent_distance(8.0, 4.5) == pytest.approx(12.5)
    assert M.solvent_distance(2.0, 1.7) == M.SOLVENT_MIN_DISTANCE
