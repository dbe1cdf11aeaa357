"""Data version sim2 of the training simulator: its draws, and shards prepared as inference prepares its input
(gemmi needed; small boxes, real computations)."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gemmi")

from deepemhancer_engine import pipeline  # noqa: E402
from deepemhancer_engine.config import EnhanceConfig, NormalizationConfig, NormMode  # noqa: E402
from deepemhancer_engine.errors import InputError  # noqa: E402
from deepemhancer_engine.metrics import fsc, radial_amplitude  # noqa: E402
from deepemhancer_engine.training import dataset, simulate, variety  # noqa: E402

#: sim2 with none of the optional draws: the noise family alone shapes the halves' difference.
PLAIN = {"rolloff": False, "anisotropic": False, "mask": None, "scale": 1.0, "offset": 0.0}


def _write_pdb(path: Path) -> Path:
    """A fake protein of 400 atoms about 26 A across (test_simulate's blob, larger)."""
    from test_simulate import _write_pdb as blob

    return blob(path, n=400, seed=1, half=13.0)


@pytest.fixture(scope="module")
def pdb(tmp_path_factory) -> Path:
    return _write_pdb(tmp_path_factory.mktemp("pdb") / "blob.pdb")


def _sim2(pdb, seed=4, *, force=None, voxel_size=1.0, resolution=4.0, max_box=56):
    return simulate.simulate_pair(pdb, seed, voxel_size=voxel_size, resolution=resolution, max_box=max_box,
                                  variety="sim2", force=force)


def test_sim1_stays_the_default_and_bad_versions_are_one_line_errors(pdb):
    a = simulate.simulate_pair(pdb, 3, voxel_size=1.5, resolution=5.0, max_box=40)
    b = simulate.simulate_pair(pdb, 3, voxel_size=1.5, resolution=5.0, max_box=40, variety="sim1")
    assert np.array_equal(a.half1, b.half1) and np.array_equal(a.targets["tightTarget"], b.targets["tightTarget"])
    assert a.info["variety"] == "sim1" and "sim2" not in a.info and a.input_mask is None
    with pytest.raises(InputError, match="did you mean 'sim2'") as err:
        simulate.simulate_pair(pdb, 3, variety="sim3")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="sim1 simulator has none"):
        simulate.simulate_pair(pdb, 3, force={"mask": None})
    with pytest.raises(InputError, match="cannot force sim2 draw"):
        _sim2(pdb, force={"colour": "pink"})


def test_sim2_is_deterministic_per_seed(pdb):
    a, b, c = _sim2(pdb, 8, voxel_size=None, resolution=None), _sim2(pdb, 8, voxel_size=None, resolution=None), \
        _sim2(pdb, 9, voxel_size=None, resolution=None)
    assert a.info == b.info and a.info["variety"] == "sim2" and set(a.info["sim2"]) >= {"noise", "scale", "mask"}
    for x, y in ((a.half1, b.half1), (a.half2, b.half2), (a.signal, b.signal),
                 (a.targets["wideTarget"], b.targets["wideTarget"])):
        assert np.array_equal(x, y)
    assert a.info["sim2"] != c.info["sim2"]


@pytest.mark.parametrize("family", variety.NOISE_FAMILIES)
def test_each_noise_family_has_its_slope(pdb, family):
    """The halves' difference (twice the noise) has the family's radial power: beyond the resolution d it is
    larger than at d for rising noise, about the same for flat and smaller for falling; and the measured ratio is
    the drawn spectrum's."""
    p = _sim2(pdb, 5, force={**PLAIN, "noise": family})
    draws = variety.Sim2Draws(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.info["sim2"].items()})
    freq, amp = radial_amplitude(p.half1 - p.half2, p.voxel_size)
    nyq = 0.5 / p.voxel_size[0]

    def band(s0):
        sel = np.abs(freq - s0) < 0.03
        return float(np.mean(amp[sel] ** 2)), float(np.mean(variety.noise_amplitude(draws, freq[sel], nyq) ** 2))

    (at_d, want_d), (beyond, want_beyond) = band(1 / 4.0), band(0.9 * nyq)
    ratio = beyond / at_d
    if family == "rising":
        assert ratio > 1.2
    elif family == "flat":
        assert 0.7 < ratio < 1.45
    else:
        assert ratio < 0.9
    assert ratio == pytest.approx(want_beyond / want_d, rel=0.15)


def test_rolloff_damps_the_halves_beyond_its_knee(pdb):
    """The roll-off is a filter on both halves (the same noise realisation with and without it): the halves'
    difference is the unfiltered one times the half-Gaussian response, flat up to the knee."""
    off = _sim2(pdb, 6, force={**PLAIN, "noise": "rising"})
    on = _sim2(pdb, 6, force={**PLAIN, "noise": "rising", "rolloff": True})
    knee, width = on.info["sim2"]["rolloff_shape"]
    freq, a_off = radial_amplitude(off.half1 - off.half2, off.voxel_size)
    _, a_on = radial_amplitude(on.half1 - on.half2, on.voxel_size)
    want = variety.rolloff_response(freq, 0.5, knee, width)
    inside = (freq > 0.05) & (freq < 0.5 * 0.95)
    assert np.allclose(a_on[inside] / a_off[inside], want[inside], rtol=0.02, atol=2e-3)
    assert want[inside].min() < 0.6  # the knee lies inside the band: the check sees the damping
    assert abs(on.fsc0143_resolution - off.fsc0143_resolution) < 0.1  # the FSC stays


def test_voxel_sizes_are_drawn_within_range(pdb):
    rng = np.random.default_rng(0)
    drawn = [variety.sample_resolution_and_voxel(rng) for _ in range(400)]
    vox = np.array([v for _, v in drawn])
    assert vox.min() >= 0.5 and vox.max() <= 2.5 and vox.min() < 0.6 and vox.max() > 2.2
    assert all(v <= r / 2.2 + 1e-9 or v == 0.5 for r, v in drawn)
    fine = _sim2(pdb, 2, force=PLAIN, voxel_size=None, resolution=None, max_box=48)
    assert 0.5 <= fine.voxel_size[0] <= 2.5 and max(fine.half1.shape) <= 48
    small = _sim2(pdb, 2, force=PLAIN, voxel_size=0.5, resolution=3.0, max_box=64)
    assert max(small.half1.shape) <= 64 and small.fsc0143_resolution < 5.0  # a cropped model still simulates


@pytest.mark.parametrize("kind", variety.MASK_KINDS)
def test_masked_pairs_have_a_flat_solvent_at_the_offset(pdb, kind):
    p = _sim2(pdb, 7, force={"mask": kind, "offset": 2.0, "scale": 30.0})
    outside = p.input_mask == 0
    assert outside.mean() > 0.05
    assert np.all(p.half1[outside] == np.float32(p.info["offset"]))
    assert np.all(p.half2[outside] == np.float32(p.info["offset"]))
    assert p.info["offset"] != 0 and np.std(p.half1[~outside]) > 0
    assert np.all(p.targets["wideTarget"][outside] == 0)  # no data beyond the mask, no target


def test_scale_and_offset_apply_to_both_halves_and_the_targets_follow_the_scale(pdb):
    one = _sim2(pdb, 9, force={**PLAIN, "noise": "flat"})
    big = _sim2(pdb, 9, force={**PLAIN, "noise": "flat", "scale": 1000.0, "offset": -3.0})
    inside = one.signal[one.tight_mask > 0.5]
    offset = -3.0 * float(np.sqrt(np.mean(inside.astype(np.float64) ** 2))) * 1000.0
    assert big.info["offset"] == pytest.approx(offset, rel=1e-5)
    for a, b in ((one.half1, big.half1), (one.half2, big.half2)):
        assert np.allclose(b, 1000.0 * a + offset, rtol=1e-5, atol=1e-4 * abs(offset))
    assert np.allclose(big.targets["tightTarget"], 1000.0 * one.targets["tightTarget"], rtol=1e-6)
    assert big.fsc0143_resolution == pytest.approx(one.fsc0143_resolution, abs=1e-6)


def test_anisotropic_blur_weakens_one_direction(pdb):
    """With the blur the signal loses power along the drawn axis, not across it."""
    plain = _sim2(pdb, 3, force={**PLAIN})
    blur = _sim2(pdb, 3, force={**PLAIN, "anisotropic": True})
    axis = np.abs(np.asarray(blur.info["sim2"]["axis"]))
    assert blur.info["sim2"]["anisotropic_b"] > 20
    f_plain, f_blur = np.fft.rfftn(plain.signal), np.fft.rfftn(blur.signal)
    fz, fy, fx = np.meshgrid(np.fft.fftfreq(plain.signal.shape[0]), np.fft.fftfreq(plain.signal.shape[1]),
                             np.fft.rfftfreq(plain.signal.shape[2]), indexing="ij")
    s = np.sqrt(fx**2 + fy**2 + fz**2)
    cos = np.abs(fx * axis[0] + fy * axis[1] + fz * axis[2]) / np.maximum(s, 1e-9)
    shell = (s > 0.15) & (s < 0.3)
    along, across = shell & (cos > 0.9), shell & (cos < 0.2)
    kept = np.abs(f_blur) ** 2 / np.maximum(np.abs(f_plain) ** 2, 1e-30)
    assert np.median(kept[along]) < 0.7 * np.median(kept[across])
    assert np.median(kept[across]) == pytest.approx(1.0, abs=0.05)


def test_sim2_shard_inputs_are_the_pipelines(pdb):
    """A sim2 shard's cubes are the pipeline's own network input of the pair's average (known answer, exact):
    conditioned at the halves' FSC-0.143 with their FSC curve, resampled to 1 A, normalised; x_mask likewise in
    MASK mode with the binary wide model mask (AUTO's for a masked pair)."""
    seed = 12
    arrays = dataset.make_crops(str(pdb), seed, crop=16, n_crops=3, variety="sim2")
    pair = simulate.simulate_pair(pdb, seed, variety="sim2")
    vs, config = pair.voxel_size, EnhanceConfig()
    curve = fsc(pair.half1, pair.half2, vs)
    avg = np.add(pair.half1, pair.half2, dtype=np.float32)
    avg *= 0.5
    clock = pipeline._StageClock(None)
    want, ninfo, _, _ = pipeline._network_input(avg, vs, config, None, 1.0, curve.resolution(0.143), curve, clock)
    if pair.input_mask is None:
        mconfig = EnhanceConfig(normalization=NormalizationConfig(mode=NormMode.MASK, mask=Path("simulated-mask")))
        want_mask = pipeline._network_input(avg, vs, mconfig, (pair.wide_mask > 0.5).astype(np.float32), 1.0,
                                            curve.resolution(0.143), curve, clock)[0]
    else:
        want_mask = want
    prepared = dataset.prepare_sim2(pair)
    assert np.array_equal(prepared.x_noise, want) and np.array_equal(prepared.x_mask, want_mask)
    for i, c in enumerate(arrays["centre"]):
        sl = tuple(slice(ci - 8, ci + 8) for ci in c)
        assert np.array_equal(arrays["x_noise"][i], want[sl].astype(np.float16))
        assert np.array_equal(arrays["x_mask"][i], want_mask[sl].astype(np.float16))
    import json

    meta = json.loads(str(arrays["meta"]))
    assert meta["variety"] == "sim2" and meta["condition_resolution"] == pytest.approx(curve.resolution(0.143))
    assert meta["noise_std"] == pytest.approx(ninfo.std) and arrays["x_noise"].shape == (3, 16, 16, 16)


def _prepared_pair(pdb, mask, scale, offset):
    return dataset.prepare_sim2(_sim2(pdb, 10, force={**PLAIN, "mask": mask, "scale": scale, "offset": offset}))


def _shard_arrays(prepared) -> list[np.ndarray]:
    return [prepared.x_noise, prepared.x_mask, *(prepared.targets[k] for k in dataset.TARGET_KEYS)]


@pytest.mark.parametrize("mask, offset", [(None, 0.0), (None, 4.0), ("model", 0.0)])
def test_scaled_halves_give_the_same_shard(pdb, mask, offset):
    """Scaling the halves by 1000 (and offsetting them) leaves the normalised input and the targets unchanged: the
    targets take the input's normalisation scale, so the network learns a scale-free mapping."""
    one, big = _prepared_pair(pdb, mask, 1.0, 0.0), _prepared_pair(pdb, mask, 1000.0, offset)
    assert big.noise_std == pytest.approx(1000.0 * one.noise_std, rel=1e-3)
    for b, a in zip(_shard_arrays(big), _shard_arrays(one)):
        assert np.allclose(b, a, rtol=0, atol=1e-3 * float(a.std()))  # float32 round-off of the offset


def test_offset_masked_halves_move_input_and_targets_together(pdb):
    """A masked pair's noise std comes from its molecule's level (normalize's masked rule) and its mean from the
    flat solvent, whose round-off grows with the offset: both move a little, the input and the targets by the
    same factor (only the input's mean shifts, by a small constant)."""
    one, big = _prepared_pair(pdb, "model", 1.0, 0.0), _prepared_pair(pdb, "model", 1000.0, 4.0)
    factor = 1000.0 * one.noise_std / big.noise_std
    assert factor == pytest.approx(1.0, rel=0.03)
    for b, a in zip(_shard_arrays(big), _shard_arrays(one)):
        diff = b - factor * a
        assert abs(float(diff.mean())) < 0.01 * float(a.std()) and float(diff.std()) < 1e-4 * float(a.std())


def test_shard_jobs_carry_the_version_and_a_folder_keeps_one(pdb, tmp_path):
    from deepemhancer_engine.commands import simulate as command

    (job,) = dataset.plan_jobs([pdb], tmp_path, 1, 0, crop=16, variety="sim2")
    assert job.variety == "sim2" and dataset.plan_jobs([pdb], tmp_path, 1, 0)[0].variety == "sim1"
    assert dataset.shard_variety(tmp_path) is None
    assert dataset.run_job(job)[1] == "ok" and dataset.shard_variety(tmp_path) == "sim2"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{pdb}\n")
    args = Namespace(structures=str(listing), root=None, out=str(tmp_path), limit=None, pairs_per_structure=1,
                     seed=0, workers=1, until=None, crop=16, variety="sim1")
    with pytest.raises(InputError, match="holds sim2 shards"):
        command.main(args)
