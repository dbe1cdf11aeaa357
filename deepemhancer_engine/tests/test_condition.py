"""What the network sees (``--condition``) and where the data beyond the limit come back (the molecule's
envelope, ``--no-solvent-envelope``): the conditioning filter's band, the noise estimate in that band, the null
response's band, the single-map check, the envelope and the flags in the sidecar."""

from __future__ import annotations

import json
import logging

import mrcfile
import numpy as np
import pytest

from deepemhancer_engine import metrics as M
from deepemhancer_engine.cli import main
from deepemhancer_engine.condition import CONDITION_EDGE, check_single_map, condition, filtered_at
from deepemhancer_engine.config import ConditionMode, EnhanceConfig
from deepemhancer_engine.errors import InputError
from deepemhancer_engine.fourier import frequency_grid
from deepemhancer_engine.normalize import estimate_noise, molecule_envelope
from deepemhancer_engine.nullresponse import _band_noise, band_key
from deepemhancer_engine.pipeline import data_envelope, enhance, load
from deepemhancer_engine.postprocess import limit_resolution
from deepemhancer_engine.resample import to_working_grid
from deepemhancer_engine.tests.test_cli import blob_map, write_mrc

SHAPE = (48, 44, 40)
VS = 1.3


def noisy(seed: int, noise: float = 0.3) -> np.ndarray:
    return blob_map(SHAPE, seed=3, noise=0.0) + np.random.default_rng(seed).normal(0, noise, SHAPE).astype(np.float32)


def shell_power(volume, vs, lo, hi=None):
    s = frequency_grid(volume.shape, vs)
    f = np.abs(np.fft.rfftn(volume.astype(np.float64))) ** 2
    sel = (s > lo) if hi is None else ((s > lo) & (s <= hi))
    return float(f[sel].sum())


def test_lowpass_removes_the_power_beyond_the_cut_off(tmp_path):
    path = write_mrc(tmp_path / "map.mrc", noisy(1))
    volume = mrcfile.read(path)
    d = 4.0
    out = condition(volume, VS, "lowpass", d)
    assert out.dtype == np.float32 and out.shape == volume.shape
    beyond = (1 + CONDITION_EDGE) / d
    assert shell_power(out, VS, beyond + 1e-3) < 1e-9 * shell_power(volume, VS, beyond + 1e-3)
    # below 1 / d untouched
    s = frequency_grid(volume.shape, VS)
    low = s <= 1 / d
    np.testing.assert_allclose(np.fft.rfftn(out)[low], np.fft.rfftn(volume)[low], rtol=0,
                               atol=1e-4 * np.abs(np.fft.rfftn(volume)).max())
    assert condition(volume, VS, "none", d) is not None
    np.testing.assert_array_equal(condition(volume, VS, "none", d), volume)
    np.testing.assert_array_equal(condition(volume, VS, "lowpass", None), volume)


def test_fsc_weighting_damps_the_noisy_shells():
    h1, h2 = noisy(1), noisy(2)
    curve = M.fsc(h1, h2, VS)
    d = curve.resolution(0.143)
    avg = 0.5 * (h1 + h2)
    lp = condition(avg, VS, "lowpass", d)
    fw = condition(avg, VS, "fscweight", d, curve)
    mid = 0.8 / d  # FSC well below 1 there: weighted down
    assert shell_power(fw, VS, mid, 1 / d) < 0.9 * shell_power(lp, VS, mid, 1 / d)
    assert shell_power(fw, VS, (1 + CONDITION_EDGE) / d + 1e-3) < 1e-9 * shell_power(avg, VS, 0.0)
    np.testing.assert_array_equal(condition(avg, VS, "fscweight", d), lp)  # without a curve: the low-pass


def test_noise_is_measured_in_the_band_the_network_sees(tiny_weights, caplog):
    volume = noisy(5)
    d = 6.0
    config = EnhanceConfig(weights=tiny_weights)
    model = load(config)
    with caplog.at_level(logging.INFO, logger="deepemhancer_engine.pipeline"):
        enhance(volume, VS, config=config, model=model, resolution=d)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Normalised")]
    std = float(logged[-1].split("std ")[1].split(" ")[0])
    seen = to_working_grid(condition(volume, VS, "lowpass", d), (VS,) * 3, target=1.0)[0]
    raw = to_working_grid(volume, (VS,) * 3, target=1.0)[0]
    assert std == pytest.approx(estimate_noise(seen)[1], rel=1e-3)
    assert std < 0.7 * estimate_noise(raw)[1]  # white noise: most of it lies beyond 6 A


def test_null_response_noise_gets_the_conditioning_band():
    assert band_key((1.0, 1.0, 1.0)) is None
    assert band_key((1.0, 1.0, 1.0, 5.04)) == (1.0, 1.0, 1.0, 5.0)
    cubes = _band_noise(np.random.default_rng(0), 2, 32, (1.0, 1.0, 1.0, 5.0), 0.1)
    assert cubes.shape == (2, 32, 32, 32)
    np.testing.assert_allclose(cubes.std(axis=(1, 2, 3)), 0.1, rtol=1e-5)
    for cube in cubes:  # nothing beyond 1.1 / 5 cycles per voxel
        assert shell_power(cube, 1.0, (1 + CONDITION_EDGE) / 5.0 + 1e-3) < 1e-9 * shell_power(cube, 1.0, 0.0)


def test_filtered_maps_are_recognised():
    volume = noisy(3)
    assert filtered_at(volume, VS) is None
    found = filtered_at(M.lowpass(volume, VS, 6.0), VS)
    assert found is not None and 5.0 < found < 7.5


def test_single_map_warning_names_the_option(caplog):
    with caplog.at_level(logging.INFO, logger="deepemhancer_engine.condition"):
        check_single_map(noisy(3), VS)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not low-pass filtered" in warnings[0] and "--resolution" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="deepemhancer_engine.condition"):
        check_single_map(M.lowpass(noisy(3), VS, 6.0), VS)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("looks low-pass filtered" in r.getMessage() for r in caplog.records)


def test_single_map_cli_warns(tmp_path, tiny, capfd):
    path = write_mrc(tmp_path / "map.mrc", noisy(3))
    assert main(["-i", str(path), "-o", str(tmp_path / "out.mrc"), "--weights", str(tiny)]) == 0
    err = capfd.readouterr().err
    assert "not low-pass filtered" in err and "give --resolution A" in err


def test_envelope_puts_the_data_back_only_inside():
    rng = np.random.default_rng(0)
    enhanced = blob_map(SHAPE, seed=3, noise=0.0)
    original = enhanced + rng.normal(0, 0.3, SHAPE).astype(np.float32)
    env = np.zeros(SHAPE, np.float32)
    env[10:30, 10:30, 10:30] = 1.0
    d = 5.0
    plain, c = limit_resolution(enhanced, original, VS, d)
    inside, c2 = limit_resolution(enhanced, original, VS, d, envelope=env)
    network_only, _ = limit_resolution(enhanced, original, VS, d, envelope=np.zeros(SHAPE, np.float32))
    assert c == c2 and c > 0
    out, inn = env == 0, env == 1
    np.testing.assert_allclose(inside[inn], plain[inn], atol=1e-5)  # inside: as without an envelope
    np.testing.assert_allclose(inside[out], network_only[out], atol=1e-5)  # outside: no data beyond d
    speckle = M.rms(plain[out] - network_only[out])
    assert speckle > 1e-3 and M.rms(inside[out] - network_only[out]) < 1e-3 * speckle
    with pytest.raises(InputError, match="envelope"):
        limit_resolution(enhanced, original, VS, d, envelope=env[:-1])


def test_molecule_envelope_covers_the_molecule_and_not_pure_noise():
    rng = np.random.default_rng(1)
    mol = blob_map((64, 64, 64), seed=2, noise=0.0)
    norm = (mol / mol.std() * 0.5 + rng.normal(0, 0.1, mol.shape)).astype(np.float32)
    env = molecule_envelope(norm, 0.1)
    assert env is not None and env.shape == norm.shape and 0 <= env.min() and env.max() <= 1
    strong = mol > np.percentile(mol, 99)
    assert env[strong].min() > 0.9
    assert 0.05 < float(env.mean()) < 0.95
    assert molecule_envelope(rng.normal(0, 0.1, (64, 64, 64)).astype(np.float32), 0.1) is None


def test_enhance_uses_the_envelope_it_reports(tiny_weights):
    config = EnhanceConfig(weights=tiny_weights, match_amplitudes=False)  # the envelope alone
    model = load(config)
    volume = noisy(4)
    env = data_envelope(volume, VS, config=config, model=model, resolution=5.0)
    assert env is not None and env.shape == volume.shape
    assert data_envelope(volume, VS, config=config, model=model, resolution=None) is None
    off = EnhanceConfig(weights=tiny_weights, solvent_envelope=False, match_amplitudes=False)
    assert data_envelope(volume, VS, config=off, model=model, resolution=5.0) is None
    with_env = enhance(volume, VS, config=config, model=model, resolution=5.0)
    without = enhance(volume, VS, config=off, model=model, resolution=5.0)
    far = env < 1e-3
    assert far.any() and (~far).any()
    # far from the molecule the data beyond the limit are gone: less there than without the envelope
    assert M.rms(with_env[far]) < M.rms(without[far])


def test_flags_reach_the_sidecar(tmp_path, tiny):
    h1, h2 = write_mrc(tmp_path / "h1.mrc", noisy(1)), write_mrc(tmp_path / "h2.mrc", noisy(2))
    base = ["-i", str(h1), "-i2", str(h2), "--weights", str(tiny), "-q"]
    assert main(base + ["-o", str(tmp_path / "a.mrc")]) == 0
    options = json.loads((tmp_path / "a.json").read_text())["options"]
    assert options["condition"] == "lowpass" and options["solvent_envelope"] is True
    assert main(base + ["-o", str(tmp_path / "b.mrc"), "--condition", "fscweight", "--no-solvent-envelope"]) == 0
    options = json.loads((tmp_path / "b.json").read_text())["options"]
    assert options["condition"] == "fscweight" and options["solvent_envelope"] is False
    assert options["match_amplitudes"] is True
    assert main(base + ["-o", str(tmp_path / "c.mrc"), "--no-match-amplitudes"]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["options"]["match_amplitudes"] is False
    assert not np.allclose(mrcfile.read(tmp_path / "a.mrc"), mrcfile.read(tmp_path / "c.mrc"))
    assert EnhanceConfig(condition="FSCweight").condition is ConditionMode.FSCWEIGHT
    with pytest.raises(InputError, match="did you mean 'lowpass'"):
        EnhanceConfig(condition="lowpas")
