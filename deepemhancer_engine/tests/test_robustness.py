"""The robustness sweep's pair generator (``benchmarks/robustness_gen.py``) and a smoke run of the sweep.

Skipped where the benchmarks folder is absent (an installed engine without the repository)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if not (BENCH / "robustness_gen.py").exists():
    pytest.skip("benchmarks/ is not beside the engine", allow_module_level=True)
pytest.importorskip("gemmi")  # the model maps (train extra)
sys.path.insert(0, str(BENCH))

import robustness  # noqa: E402
import robustness_gen as gen  # noqa: E402

from deepemhancer_engine import metrics as M  # noqa: E402
from deepemhancer_engine.modelmap import model_mask, read_model  # noqa: E402
from deepemhancer_engine.tests.test_evaluate import _write_pdb  # noqa: E402

SHAPE = (48, 48, 48)


def _power(colour: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shell frequencies (1/A) and mean power of one realisation at 1 A/voxel."""
    noise = gen.coloured_noise(SHAPE, (1.0,) * 3, colour, np.random.default_rng(seed), 4.5)
    freq, amp = M.radial_amplitude(noise, 1.0)
    return freq, amp**2


def _slope(colour: str) -> float:
    """Log-log slope of the radial power between 0.1 and 0.4 1/A."""
    freq, power = _power(colour)
    sel = (freq >= 0.1) & (freq <= 0.4)
    return float(np.polyfit(np.log(freq[sel]), np.log(power[sel]), 1)[0])


@pytest.mark.parametrize("colour, low, high", [("white", -0.15, 0.15), ("rise_k1", 0.75, 1.25),
                                               ("rise_k2", 1.75, 2.25), ("fall_k1", -1.1, -0.6)])
def test_noise_colours_have_their_slopes(colour, low, high):
    assert low < _slope(colour) < high


def test_relion_rolls_off_beyond_the_resolution_and_the_bump_stands_out():
    freq, power = _power("relion")
    peak = freq[np.argmax(power)]
    assert 0.18 < peak < 0.32  # rises like s^2 up to about 1.25 / 4.5 A, then falls
    assert power[freq > 0.45].mean() < 0.2 * power.max()
    freq, power = _power("pink_bump")
    at = np.argmin(np.abs(freq - gen.BUMP_AT))
    assert power[at] > 2.0 * max(power[at - 4], power[at + 4])


def test_noise_is_zero_mean_unit_std_and_colour_names_are_checked():
    noise = gen.coloured_noise(SHAPE, (1.0,) * 3, "rise_k2", np.random.default_rng(3), 4.5)
    assert noise.dtype == np.float32 and abs(float(noise.std()) - 1) < 1e-5 and abs(float(noise.mean())) < 1e-6
    with pytest.raises(ValueError, match="unknown noise colour"):
        gen.Setting(noise="falling")


@pytest.fixture(scope="module")
def pdb(tmp_path_factory) -> Path:
    return _write_pdb(tmp_path_factory.mktemp("robust") / "7ZZZ__test.pdb")


def test_pair_hits_the_target_resolution_with_independent_halves(pdb):
    pair = gen.make_pair(pdb, gen.Setting(noise="rise_k2"), 11)
    vs = pair.grid.voxel_size
    assert abs(M.fsc(pair.half1, pair.half2, vs).resolution(0.143) - 4.5) < 0.6
    n1, n2 = pair.half1 - pair.signal, pair.half2 - pair.signal
    assert abs(M.cc(n1, n2)) < 0.05  # independent noise per half
    again = gen.make_pair(pdb, gen.Setting(noise="rise_k2"), 11)
    assert np.array_equal(again.half1, pair.half1)


def test_scale_offset_and_mask_are_applied(pdb):
    base = gen.make_pair(pdb, gen.Setting(), 5)
    scaled = gen.make_pair(pdb, gen.Setting(scale=0.001, offset_sd=10.0), 5)
    offset = 10.0 * 0.001 * float(base.half1.std())
    np.testing.assert_allclose(scaled.half2, 0.001 * base.half2 + offset, rtol=1e-4, atol=1e-6)
    masked = gen.make_pair(pdb, gen.Setting(masked=True), 5)
    mask = model_mask(read_model(pdb), masked.grid, gen.MASK_RADIUS, soft_edge=gen.MASK_EDGE)
    np.testing.assert_allclose(masked.half1, base.half1 * mask, atol=1e-6)
    assert (mask == 0).mean() > 0.3 and np.all(masked.half1[mask == 0] == 0)


def test_cells_one_factor_at_a_time():
    cells = robustness.all_cells()
    names = [c.name for c in cells]
    assert len(set(names)) == len(names) and len(names) == 6 + 4 + 4 + 3 + 2
    for c in cells:  # every cell differs from the typical setting in its own factor only (or not at all)
        changed = {f for f in ("noise", "bfactor", "voxel", "scale", "offset_sd", "masked")
                   if getattr(c.setting, f) != getattr(robustness.TYPICAL, f)}
        assert changed <= {"scale", "offset_sd"} if c.factor == "scale" else changed <= {c.factor}
    assert [c.name for c in robustness.select_cells("masked,noise=relion")] == ["noise=relion", "masked=no",
                                                                                  "masked=yes"]
    with pytest.raises(SystemExit, match="unknown cells"):
        robustness.select_cells("noise=purple")


def test_quick_sweep_end_to_end_and_resumes(pdb, tiny, tmp_path):
    pytest.importorskip("matplotlib")  # the heat map (plots extra)
    (pdb.parent / "split_eval.txt").write_text(pdb.name + "\n")
    out = tmp_path / "out"
    argv = ["--quick", "--weights", str(tiny), "--structures", str(pdb.parent), "--outdir", str(out),
            "--engine-set", "inference.device=cpu"]
    assert robustness.main(argv) == 0
    lines = (out / "robustness.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["cell"] for r in records] == ["noise=white", "noise=rise_k2"]
    for r in records:
        assert r["fingerprint"]["set"] == {"inference.device": "cpu"}
        assert all(-1 <= r["scores"][v]["cc_mask"] <= 1 for v in robustness.VARIANTS)
    report = (out / "robustness.md").read_text()
    assert "| noise | **white** (typical) | 1 |" in report and "Cells failing the acceptance" in report
    assert (out / "robustness.png").stat().st_size > 1000
    assert robustness.main(argv) == 0  # everything cached: nothing appended
    assert (out / "robustness.jsonl").read_text().splitlines() == lines
