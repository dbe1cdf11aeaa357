"""``deepemhancer evaluate`` and the model-map module on a small synthetic case (atoms made here).

The helper below is deliberately simple (gemmi model map + Gaussian noise); the real simulator is
``deepemhancer_engine.training.simulate``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("gemmi")

from deepemhancer_engine.errors import InputError
from deepemhancer_engine.evaluate import evaluate  # noqa: E402
from deepemhancer_engine.io import GridInfo, read_map, write_map  # noqa: E402
from deepemhancer_engine.modelmap import model_map, model_mask, read_model  # noqa: E402
from deepemhancer_engine.postprocess import limit_resolution  # noqa: E402

ORIGIN = (101.5, -40.0, 12.25)  # deliberately non-zero, like cropped deposited maps
SHAPE = (36, 34, 32)


def _write_pdb(path, n=300, seed=0):
    """A compact random-walk 'chain' of C/N/O atoms (3.8 A steps) inside the box, in absolute A."""
    rng = np.random.default_rng(seed)
    pos = np.zeros((n, 3))
    centre = np.array(ORIGIN) + np.array(SHAPE[::-1]) / 2.0
    pos[0] = centre
    for i in range(1, n):
        step = rng.normal(size=3)
        pos[i] = pos[i - 1] + 1.5 * step / np.linalg.norm(step)
        pos[i] = centre + np.clip(pos[i] - centre, -9, 9)
    lines = []
    for i, (x, y, z) in enumerate(pos):
        el = "CNO"[i % 3]
        lines.append(f"ATOM  {i + 1:5d}  {el:<3s} ALA A{i // 5 + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00"
                     f"           {el}")
    path.write_text("\n".join(lines) + "\nEND\n")
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalcase")
    pdb = _write_pdb(d / "model.pdb")
    grid = GridInfo(shape=SHAPE, voxel_size=(1.0, 1.0, 1.0), origin=ORIGIN)
    clean = model_map(pdb, grid, blur=60.0)
    rng = np.random.default_rng(7)
    sd = float(clean.std())
    halves = [clean + rng.normal(0, sd, SHAPE).astype(np.float32) for _ in range(2)]
    return {"pdb": pdb, "grid": grid, "clean": clean, "halves": halves, "dir": d}


def test_model_map_sits_on_the_atoms_with_a_non_zero_origin(tmp_path):
    pdb = tmp_path / "one.pdb"
    x, y, z = ORIGIN[0] + 10.0, ORIGIN[1] + 12.0, ORIGIN[2] + 7.0
    pdb.write_text(f"ATOM      1  CA  ALA A   1    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00           C\nEND\n")
    geo = GridInfo(shape=(20, 24, 22), voxel_size=(1.0, 1.0, 1.0), origin=ORIGIN)
    m = model_map(pdb, geo)
    assert np.unravel_index(np.argmax(m), m.shape) == (7, 12, 10)
    mask = model_mask(pdb, geo, 3.0)
    assert mask[7, 12, 10] == 1 and mask[7, 12, 13] == 1 and mask[7, 12, 14] == 0
    assert mask.sum() == pytest.approx(4 / 3 * math.pi * 27, rel=0.15)


def test_geometry_uses_nstart_when_origin_is_zero():
    grid = GridInfo(shape=(10, 10, 10), voxel_size=(2.0, 2.0, 2.0), nstart=(-5, -4, -3))
    assert grid.effective_origin == (-10.0, -8.0, -6.0)


def test_read_model_errors(tmp_path):
    from deepemhancer_engine.errors import InputError

    bad = tmp_path / "bad.pdb"
    bad.write_text("this is not a model\n")
    with pytest.raises(InputError, match="bad.pdb"):
        read_model(bad)


def test_identity_enhancer_passes_the_honesty_checks(case, tmp_path):
    h1, h2 = case["halves"]
    res = evaluate(h1, h2, case["grid"], enhancer=lambda v: v.copy(), model=case["pdb"], outdir=tmp_path,
                   noise_test=True, label="synthetic")
    assert res.honesty["max_fsc_gain_beyond_raw0.143"] == pytest.approx(0.0, abs=1e-6)
    assert abs(res.honesty["noise_max_fsc_beyond_10A"]) < 0.35
    for name in ("average", "sharpened", "enhanced"):
        v = res.variants[name]
        assert all(np.isfinite(list(v.values()))), name
        assert v["cc_mask"] > 0.3
    assert res.variants["enhanced"]["cc_box"] == pytest.approx(res.variants["average"]["cc_box"])
    for f in ("metrics.tsv", "fsc_curves.tsv", "summary.json", "fsc_model.png", "fsc_halves.png", "slices.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    rows = [ln.split("\t") for ln in (tmp_path / "metrics.tsv").read_text().splitlines()]
    assert rows[0] == ["variant", "metric", "value"]
    assert ["honesty", "max_fsc_gain_beyond_raw0.143", "0"] in rows


class _Masking:
    """The resolution limit with the input as its own "enhanced" map and the data beyond the limit only inside a
    fixed envelope (what the pipeline does beyond d, the network left out)."""

    takes_resolution = True

    def __init__(self, env, voxel_size):
        self.env, self.voxel_size = env, voxel_size

    def __call__(self, volume, resolution=None):
        return limit_resolution(volume, volume, self.voxel_size, resolution, envelope=self.env)[0]

    def envelope(self, volume, resolution=None):
        return self.env


def test_masking_gains_fsc_only_against_the_unmasked_halves(case):
    h1, h2 = case["halves"]
    env = np.zeros(h1.shape, np.float32)
    c = [n // 2 for n in h1.shape]
    env[c[0] - 8:c[0] + 8, c[1] - 8:c[1] + 8, c[2] - 8:c[2] + 8] = 1.0
    res = evaluate(h1, h2, case["grid"], enhancer=_Masking(env, case["grid"].voxel_size), model=case["pdb"])
    assert res.honesty["max_fsc_gain_beyond_raw0.143"] > 0.05  # less noise, same signal: a higher FSC
    assert res.honesty["max_fsc_gain_in_envelope"] == pytest.approx(0.0, abs=1e-6)
    plain = evaluate(h1, h2, case["grid"], enhancer=lambda v: v.copy(), model=case["pdb"])
    assert plain.honesty["max_fsc_gain_in_envelope"] == pytest.approx(0.0, abs=1e-6)  # no envelope: raw halves


def test_a_hallucinating_enhancer_is_caught(case):
    h1, h2 = case["halves"]
    clean = case["clean"]

    def cheat(v):  # pastes the true model density in (repeated to fill larger boxes), whatever the input
        reps = [-(-n // c) for n, c in zip(v.shape, clean.shape)]
        paste = np.tile(clean, reps)[tuple(slice(0, n) for n in v.shape)]
        return (0.2 * v + paste).astype(np.float32)

    res = evaluate(h1, h2, case["grid"], enhancer=cheat, model=case["pdb"], noise_test=True)
    assert res.honesty["max_fsc_gain_beyond_raw0.143"] > 0.3
    assert res.honesty["noise_max_fsc_beyond_10A"] > 0.9
    assert res.variants["enhanced"]["cc_mask"] > res.variants["average"]["cc_mask"]


def test_wrong_origin_lowers_cc_mask(case):
    h1, h2 = case["halves"]
    shifted = GridInfo(shape=SHAPE, voxel_size=(1.0, 1.0, 1.0), origin=(ORIGIN[0] + 6, ORIGIN[1], ORIGIN[2]))
    good = evaluate(h1, h2, case["grid"], enhanced=h1, model=case["pdb"])
    bad = evaluate(h1, h2, shifted, enhanced=h1, model=case["pdb"])
    assert good.variants["average"]["cc_mask"] > bad.variants["average"]["cc_mask"] + 0.2
    assert any("no network" in n for n in good.notes)


def test_single_map_is_used_as_both_halves(case):
    h1, _ = case["halves"]
    res = evaluate(h1, h1, case["grid"], enhancer=lambda v: v, resolution=4.0)
    assert res.halves_identical and res.resolution_used_A == 4.0
    assert math.isnan(res.honesty["max_fsc_gain_beyond_raw0.143"])
    assert any("identical" in n for n in res.notes)
    assert math.isnan(res.variants["enhanced"]["cc_mask"])  # no model given


def _write_inputs(case, d):
    paths = {}
    for name, arr in (("h1", case["halves"][0]), ("h2", case["halves"][1])):
        paths[name] = d / f"{name}.mrc"
        write_map(paths[name], arr, case["grid"])
    return paths


def test_cli_evaluate_with_tiny_network(case, tmp_path, tiny_weights):
    from deepemhancer_engine.cli import main

    p = _write_inputs(case, tmp_path)
    out = tmp_path / "out"
    code = main(["evaluate", "--half1", str(p["h1"]), "--half2", str(p["h2"]), "--model", str(case["pdb"]),
                 "--outdir", str(out), "--weights", str(tiny_weights), "--device", "cpu", "--noise-test", "-q"])
    assert code == 0
    text = (out / "metrics.tsv").read_text()
    assert "enhanced\tcc_mask\t" in text and "noise_max_fsc_beyond_10A" in text
    assert (out / "fsc_model.png").exists() and (out / "slices.png").exists()
    _, grid = read_map(p["h1"])
    assert grid.origin == pytest.approx(ORIGIN)


def test_cli_evaluate_given_enhanced_map_without_network(case, tmp_path):
    from deepemhancer_engine.cli import main

    p = _write_inputs(case, tmp_path)
    out = tmp_path / "out"
    code = main(["evaluate", "--map", str(p["h1"]), "--enhanced", str(p["h2"]), "--no-network",
                 "--resolution", "4", "--outdir", str(out), "--no-plots", "-q"])
    assert code == 0
    assert not (out / "slices.png").exists()


def test_cli_evaluate_input_errors(case, tmp_path, capsys):
    from deepemhancer_engine.cli import main

    p = _write_inputs(case, tmp_path)
    assert main(["evaluate", "--map", str(p["h1"]), "--half1", str(p["h1"]), "--outdir", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["evaluate", "--half1", str(p["h1"]), "--outdir", str(tmp_path)]) == 2
    assert main(["evaluate", "--map", str(p["h1"]), "--no-network", "--outdir", str(tmp_path)]) == 2


def test_model_metrics_scores_any_map_like_evaluate(case):
    """model_metrics (the benchmark's ceiling) gives evaluate's numbers for the same map, and the
    model map itself, low-passed at the resolution, scores CC_mask 1."""
    from deepemhancer_engine import metrics as M
    from deepemhancer_engine.evaluate import model_metrics

    h1, h2 = case["halves"]
    res = evaluate(h1, h2, case["grid"], enhanced=h1.copy(), model=case["pdb"], resolution=6.0)
    geo = case["grid"]
    perfect = M.lowpass(model_map(case["pdb"], geo), geo.voxel_size, 6.0)
    got = model_metrics({"half1": h1, "perfect": perfect}, case["pdb"], case["grid"], 6.0, input_map=0.5 * (h1 + h2))
    assert got["half1"] == pytest.approx(res.variants["enhanced"], nan_ok=True)
    assert math.isnan(model_metrics({"half1": h1}, case["pdb"], case["grid"], 6.0)["half1"]["intensity_ratio"])
    assert got["perfect"]["cc_mask"] == pytest.approx(1.0, abs=1e-6)
    assert got["perfect"]["cc_mask"] > got["half1"]["cc_mask"] + 0.1


# --- the result type and the files it writes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def written(case, tmp_path_factory):
    out = tmp_path_factory.mktemp("written")
    h1, h2 = case["halves"]
    res = evaluate(h1, h2, case["grid"], enhancer=lambda v: 1.5 * v, model=case["pdb"], outdir=out,
                   noise_test=True, plots=False, signal=case["clean"], extra={"half1": h1})
    return res, out


def test_tsv_columns_and_rows_come_from_the_one_list(written):
    from deepemhancer_engine import evaluate as E

    res, out = written
    rows = [ln.split("\t") for ln in (out / "metrics.tsv").read_text().splitlines()]
    assert tuple(rows[0]) == E.METRICS_COLUMNS
    body = [r for r in rows[1:] if r[0] != "note"]
    expected = ([("half_maps", k) for k in E.HALF_MAP_KEYS] + [(v, k) for v in E.VARIANTS for k in E.MODEL_METRICS]
                + [("half1", k) for k in E.MODEL_METRICS] + [("honesty", k) for k in E.HONESTY_KEYS])
    assert [(r[0], r[1]) for r in body] == expected
    assert [r[2] for r in rows if r[0] == "note"] == res.notes
    header = (out / "fsc_curves.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header[:2]) == E.CURVE_AXIS_COLUMNS
    assert header[2:] == [E.curve_column(k) for k in res.curves]
    assert list(res.curves) == [E.RAW_HALVES, *(E.model_curve(v, m) for v in (*E.VARIANTS, "half1")
                                                for m in (True, False)), E.ENHANCED_HALVES, E.NOISE_OUTPUTS]
    summary = E.format_summary(res).splitlines()
    assert summary[1].split()[1:] == ["FSC0.5", "masked", "unmasked", "CC_mask", "CC_box", "solvent/mol"]
    assert all(key in E.MODEL_METRICS for key, _, _ in E.SUMMARY_TABLE)
    first = 2 + len(E.VARIANTS)
    assert [ln.split()[0] for ln in summary[2:first]] == list(E.VARIANTS)
    assert [ln.split(":")[0] for ln in summary[first:first + len(E.HONESTY_KEYS)]] == list(E.HONESTY_KEYS)


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def test_result_round_trips_through_summary_json(written):
    import dataclasses
    import json

    from deepemhancer_engine.evaluate import EvaluationResult

    res, out = written
    data = json.loads((out / "summary.json").read_text())
    back = EvaluationResult.from_summary(data)
    assert _same(back.to_summary(), data)
    skip = {"curves", "model_map", "files", "timing_s"}  # files and timings grow after summary.json is written
    for f in dataclasses.fields(EvaluationResult):
        if f.name not in skip:
            assert _same(getattr(back, f.name), getattr(res, f.name)), f.name
    assert back.files == {k: res.files[k] for k in ("metrics", "curves")}
    assert "half_fsc0.143_A" in data and "curves" not in data and "model_map" not in data
    assert len(data["inband_excess"]["excess"]) == 4 and set(data["extra_variants"]) == {"half1"}
    assert res.model_map is not None and res.model_map.shape == SHAPE and back.model_map is None
    assert not any(k.startswith("_") for k in data)


def test_plugin_fsc_viewer_reads_the_columns_evaluate_writes():
    """The plugin never imports the engine: its viewer names the fsc_curves.tsv columns itself."""
    import ast
    import fnmatch
    from pathlib import Path

    from deepemhancer_engine.evaluate import CURVE_AXIS_COLUMNS

    viewer = Path(__file__).resolve().parents[2] / "viewers" / "viewer_deepemhancer.py"
    if not viewer.exists():
        pytest.skip("the Scipion plugin is not beside the engine")
    consts = {}
    for node in ast.parse(viewer.read_text()).body:  # module-level constants: NAME = literal, A, B = a, b
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            names = [target] if isinstance(target, ast.Name) else getattr(target, "elts", [])
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            values = [value] if isinstance(target, ast.Name) else value
            consts.update((n.id, v) for n, v in zip(names, values) if isinstance(n, ast.Name))
    assert (consts["FREQ_COLUMN"], consts["RESOLUTION_COLUMN"]) == CURVE_AXIS_COLUMNS
    globs = consts["EVALUATE_GLOBS"]
    assert any(fnmatch.fnmatch("evaluate/fsc_curves.tsv", g) for g in globs)
    assert not any(fnmatch.fnmatch("evaluate/metrics.tsv", g) for g in globs)


# --- issue 20: LocScale variant, solvent and intensity ratios, in-band check, noise grid, best classical -------


def test_locscale_is_a_variant_with_a_model_and_nan_without(case, tmp_path):
    h1, h2 = case["halves"]
    res = evaluate(h1, h2, case["grid"], enhanced=h1.copy(), model=case["pdb"], outdir=tmp_path, plots=False)
    loc, avg = res.variants["locscale"], res.variants["average"]
    assert all(np.isfinite(list(loc.values())))
    # model-based amplitudes: closer to the model than the plain average, and a flatter solvent
    assert loc["cc_mask"] > avg["cc_mask"] and loc["cc_box"] > avg["cc_box"] + 0.1
    assert loc["solvent_rms_ratio"] < 0.5 * avg["solvent_rms_ratio"]
    assert "locscale vs model (masked)" in res.curves and res.timing_s["locscale"] > 0
    assert "locscale\tcc_mask\t" in (tmp_path / "metrics.tsv").read_text()
    bare = evaluate(h1, h2, case["grid"], enhanced=h1.copy())
    assert all(math.isnan(v) for v in bare.variants["locscale"].values())
    assert not any("locscale" in k for k in bare.curves)


def test_solvent_and_intensity_ratios_per_variant(written):
    """The written case's enhancer is 1.5 x the map: intensity ratio 1.5, the same solvent ratio (scale-free)."""
    res, _ = written
    avg, enh = res.variants["average"], res.variants["enhanced"]
    assert avg["intensity_ratio"] == pytest.approx(1.0)
    assert enh["intensity_ratio"] == pytest.approx(1.5, rel=1e-5)
    assert enh["solvent_rms_ratio"] == pytest.approx(avg["solvent_rms_ratio"], rel=1e-5)
    assert 0 < avg["solvent_rms_ratio"] < 1 and res.solvent_distance_A >= 6.0


def _pattern(shape, sd):
    """A fixed band-limited random map (3 A), standard deviation ``sd``."""
    from deepemhancer_engine import metrics as M

    pat = M.lowpass(np.random.default_rng(3).normal(size=shape).astype(np.float32), 1.0, 3.0)
    return (pat * (sd / pat.std())).astype(np.float32)


def test_in_band_excess_through_evaluate(case):
    """A fixed linear filter (B -40 sharpening): excess within chance in every band; an enhancer that adds a
    fixed pattern only to noisy inputs (not to the noise-free signal): positive excess, far beyond chance."""
    from deepemhancer_engine import metrics as M

    h1, h2 = case["halves"]
    clean = case["clean"]
    honest = evaluate(h1, h2, case["grid"], enhancer=lambda v: M.apply_bfactor(v, 1.0, -40.0), signal=clean)
    band = honest.inband_excess
    assert len(band["excess"]) == 4 and band["edges_A"][0] == pytest.approx(10.0)
    assert band["edges_A"][-1] == pytest.approx(honest.resolution_used_A)
    assert all(abs(e) < c for e, c in zip(band["excess"], band["chance_3sigma"]))
    assert honest.honesty["inband_excess_max"] == pytest.approx(max(band["excess"]))
    pat = _pattern(clean.shape, 0.5 * float(clean.std()))

    def cheat(v):
        return v + pat if v.std() > 1.2 * clean.std() else v

    caught = evaluate(h1, h2, case["grid"], enhancer=cheat, signal=clean)
    assert caught.honesty["inband_excess_max"] > 0.3 and caught.honesty["inband_excess_mean"] > 0.15
    assert caught.inband_excess["excess"][-1] > 3 * caught.inband_excess["chance_3sigma"][-1]
    without = evaluate(h1, h2, case["grid"], enhancer=cheat)
    assert math.isnan(without.honesty["inband_excess_max"]) and without.inband_excess is None


def test_noise_grid_case(case):
    """An identity enhancer passes a grid case (independent noise stays independent); one that adds a fixed
    pattern fails it; the two volumes have distinct seeds and at least 96 voxels per edge."""
    from deepemhancer_engine.evaluate import NOISE_MIN_EDGE, noise_case
    from deepemhancer_engine.noisegen import noise_test_grid

    grid_case = noise_test_grid()[0]
    ok = noise_case(lambda v: v.copy(), grid_case, edge=32)
    assert ok.edge == NOISE_MIN_EDGE and ok.seeds[0] != ok.seeds[1]
    assert ok.passed and ok.within_chance and ok.under_0143
    assert ok.output_rms_rel == pytest.approx(1.0, rel=1e-5) and ok.chance_3sigma < 0.143
    pat = _pattern((NOISE_MIN_EDGE,) * 3, 1.0)
    bad = noise_case(lambda v: v + pat, grid_case)
    assert not bad.passed and bad.max_fsc_beyond_10A > 0.3


def test_best_classical_and_gain():
    from deepemhancer_engine.evaluate import best_classical, gain_over

    medians = {"average": 4.04, "sharpened": 4.67, "enhanced": 4.17, "locscale": 3.0}
    assert best_classical(medians, "fsc0.5_masked_A") == "average"  # LocScale is never the classical yardstick
    assert gain_over(4.17, 4.04, "fsc0.5_masked_A") == pytest.approx(-0.13)
    cc = {"average": 0.875, "sharpened": 0.946}
    assert best_classical(cc, "cc_mask") == "sharpened"
    assert gain_over(0.953, 0.946, "cc_mask") == pytest.approx(0.007)
    assert best_classical({"average": float("nan"), "sharpened": 0.5}, "cc_box") == "sharpened"
    with pytest.raises(ValueError):
        best_classical(cc, "intensity_ratio")


def test_network_enhancer_matched_to_the_halves(case, tiny_weights):
    """The truth of the in-band check goes into the network with the halves' noise statistics."""
    from deepemhancer_engine.config import EnhanceConfig, InferenceConfig, NormMode
    from deepemhancer_engine.evaluate import make_enhancer
    from deepemhancer_engine.normalize import estimate_noise

    h1, h2 = case["halves"]
    config = EnhanceConfig(weights=tiny_weights, inference=InferenceConfig(device="cpu"))
    enhancer = make_enhancer(config, case["grid"].voxel_size)
    matched = enhancer.matched_to(h1, h2)
    norm = matched.config.normalization
    assert norm.mode is NormMode.STATS and matched.loaded is enhancer.loaded
    assert norm.noise_std == pytest.approx(np.mean([estimate_noise(h)[1] for h in (h1, h2)]), rel=0.05)
    assert norm.noise_std > 3 * estimate_noise(case["clean"])[1]  # the signal's own estimate would be far off
    assert matched(case["clean"]).shape == case["clean"].shape


def test_extra_maps_are_scored_like_the_variants(case, tmp_path):
    from deepemhancer_engine.errors import InputError

    h1, h2 = case["halves"]
    res = evaluate(h1, h2, case["grid"], enhanced=h1.copy(), model=case["pdb"], outdir=tmp_path, plots=False,
                   extra={"half1 again": h1})
    assert res.extra_variants["half1 again"] == pytest.approx(res.variants["enhanced"], nan_ok=True)
    assert "half1 again\tcc_mask\t" in (tmp_path / "metrics.tsv").read_text()
    with pytest.raises(InputError, match="extra map"):
        evaluate(h1, h2, case["grid"], enhanced=h1, extra={"average": h1})


def test_confidence_calibration_ranks_blocks_by_their_error(case):
    """Noise growing along x spoils the enhanced map's agreement with the model block by block: a confidence that
    falls along x ranks the blocks right (Spearman near 1), one that rises ranks them wrong."""
    from deepemhancer_engine.confidence import calibration

    clean, grid = case["clean"], case["grid"]
    x = np.linspace(0.0, 1.0, SHAPE[2], dtype=np.float32)[None, None, :]
    noisy = clean + 6.0 * float(clean.std()) * x * np.random.default_rng(3).normal(size=SHAPE).astype(np.float32)
    falling = np.broadcast_to(1.0 - x, SHAPE)
    molecule = model_mask(case["pdb"], grid, 3.0) > 0.5
    good = calibration(falling, noisy, clean, molecule, grid.voxel_size, halves=tuple(case["halves"]), edge_A=4.0)
    bad = calibration(1.0 - falling, noisy, clean, molecule, grid.voxel_size, edge_A=4.0)
    assert good.spearman > 0.6 and bad.spearman < -0.6 and np.isnan(bad.naive_spearman)
    assert good.high > good.low
    with pytest.raises(InputError, match="fewer than 3 blocks"):
        calibration(falling, noisy, clean, model_mask(case["pdb"], grid, 0.1) > 2, grid.voxel_size)


def test_cli_evaluate_calibrates_a_confidence_map(case, tmp_path, tiny_weights):
    from deepemhancer_engine.cli import main

    p = _write_inputs(case, tmp_path)
    out, conf, report = tmp_path / "enh.mrc", tmp_path / "conf.mrc", tmp_path / "report"
    assert main(["-i", str(p["h1"]), "-i2", str(p["h2"]), "-o", str(out), "--confidence", str(conf),
                 "--weights", str(tiny_weights), "-q"]) == 0
    code = main(["evaluate", "--half1", str(p["h1"]), "--half2", str(p["h2"]), "--enhanced", str(out),
                 "--confidence", str(conf), "--model", str(case["pdb"]), "--no-network", "--outdir", str(report), "-q"])
    assert code == 0
    text = (report / "metrics.tsv").read_text()
    assert "confidence\tspearman\t" in text and "confidence\tnaive_spearman\t" in text
    assert (report / "confidence_calibration.png").exists()
    wrong = tmp_path / "wrong.mrc"
    write_map(wrong, np.zeros((8, 8, 8), np.float32), GridInfo(shape=(8, 8, 8), voxel_size=(1.0,) * 3))
    assert main(["evaluate", "--half1", str(p["h1"]), "--half2", str(p["h2"]), "--enhanced", str(out),
                 "--confidence", str(wrong), "--no-network", "--outdir", str(report), "-q"]) == 2
