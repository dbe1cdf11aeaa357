"""The ``deepemhancer`` command end to end: geometry kept exactly, bad input handled cleanly."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from deepemhancer_engine.cli import main


def blob_map(shape, seed=0, noise=0.05):
    """A few Gaussian blobs plus noise: a protein-like map of ``shape`` ([z, y, x])."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    vol = np.zeros(shape, np.float32)
    centre = np.array(shape) / 2
    for _ in range(12):
        c = centre + rng.normal(0, 0.12, 3) * np.array(shape)
        vol += np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / (2 * 3.0**2))
    return vol + rng.normal(0, noise, shape).astype(np.float32)


def write_mrc(path: Path, data, voxel_size=1.3, origin=(12.5, -7.25, 30.0)) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = voxel_size
        m.header.origin = origin
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("maps")
    shape = (110, 100, 90)  # [z, y, x]: a 90 x 100 x 110 map
    h1 = write_mrc(d / "h1.mrc", blob_map(shape, seed=1))
    h2 = write_mrc(d / "h2.mrc", blob_map(shape, seed=2))
    return h1, h2


def test_halves_keep_exact_geometry(tmp_path, tiny, halves):
    h1, h2 = halves
    before = [digest(h1), digest(h2)]
    out = tmp_path / "out.mrc"
    code = main(["-i", str(h1), "-i2", str(h2), "-o", str(out), "--weights", str(tiny), "-q"])
    assert code == 0
    with mrcfile.open(h1) as a, mrcfile.open(out) as b:
        assert b.data.shape == a.data.shape == (110, 100, 90)
        assert b.data.dtype == np.float32
        for field in ("x", "y", "z"):
            assert b.voxel_size[field] == pytest.approx(a.voxel_size[field], abs=1e-6)
            assert b.header.origin[field] == pytest.approx(a.header.origin[field], abs=1e-6)
        for field in ("mapc", "mapr", "maps", "nxstart", "nystart", "nzstart"):
            assert int(b.header[field]) == int(a.header[field])
        assert np.isfinite(b.data).all()
        assert float(np.abs(b.data).max()) > 0
    assert [digest(h1), digest(h2)] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.mrc", "out_fsc.tsv"]  # provenance


def test_refuses_to_overwrite_without_force(tmp_path, tiny, capsys):
    path = write_mrc(tmp_path / "m.mrc", blob_map((36, 34, 33), seed=6), voxel_size=1.05)
    out = tmp_path / "out.mrc"
    out.write_bytes(b"keep me")
    args = ["-i", str(path), "-o", str(out), "--weights", str(tiny), "-q"]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(args + ["--force"]) == 0
    with mrcfile.open(out) as m:
        assert m.data.shape == (36, 34, 33)


def test_constant_blend_legacy_stride(tmp_path, tiny):
    path = write_mrc(tmp_path / "m.mrc", blob_map((40, 36, 44), seed=3), voxel_size=1.0)
    out = tmp_path / "o.mrc"
    assert main(["-i", str(path), "-o", str(out), "--weights", str(tiny), "-q",
                 "--blend", "constant", "--stride", "16"]) == 0
    with mrcfile.open(out) as m:
        assert m.data.shape == (40, 36, 44)
    assert main(["-i", str(path), "-o", str(out), "--weights", str(tiny), "-q", "--force", "--lattice", "cubic"]) == 0


def test_noise_stats_and_mask_modes(tmp_path, tiny):
    vol = blob_map((48, 48, 48), seed=4)
    path = write_mrc(tmp_path / "m.mrc", vol, voxel_size=1.0)
    mask = write_mrc(tmp_path / "mask.mrc", (vol > 0.3).astype(np.float32), voxel_size=1.0)
    out1, out2 = tmp_path / "o1.mrc", tmp_path / "o2.mrc"
    assert main(["-i", str(path), "-o", str(out1), "--weights", str(tiny), "-q",
                 "--noiseStats", "-0.01", "0.05"]) == 0
    assert main(["-i", str(path), "-o", str(out2), "--weights", str(tiny), "-q", "-m", str(mask)]) == 0
    assert out1.exists() and out2.exists()


def test_info_reports_parameter_counts(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "paper U-Net (32/64/128)" in text
    assert "parameters" in text
    assert "null response: bfloat16 64^3, float32 64^3 (tightTarget.null.npz)" in text
    assert "Null-response cache (band-limited noise): " in text


def test_module_runs_as_program(tmp_path, tiny):
    """The real entry point in a fresh interpreter: --help is quick and a run works."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-m", "deepemhancer_engine", "--help"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0 and "--noiseStats" in res.stdout and "DEEPEMHANCER_CACHE" in res.stdout


# --- bad input: exit 2, one line, no traceback, no output, inputs untouched ---------------------------


def _bad_cases(d: Path) -> dict[str, tuple[list[str], str]]:
    good = write_mrc(d / "good.mrc", blob_map((40, 40, 40), seed=5), voxel_size=1.0, origin=(0, 0, 0))
    other_shape = write_mrc(d / "shape.mrc", blob_map((40, 40, 38)), voxel_size=1.0, origin=(0, 0, 0))
    other_vs = write_mrc(d / "vs.mrc", blob_map((40, 40, 40)), voxel_size=1.1, origin=(0, 0, 0))
    other_origin = write_mrc(d / "org.mrc", blob_map((40, 40, 40)), voxel_size=1.0, origin=(5, 0, 0))
    text = d / "notmrc.mrc"
    text.write_text("this is not a map\n" * 200)
    trunc = d / "trunc.mrc"
    trunc.write_bytes(good.read_bytes()[:-5000])
    nan = blob_map((40, 40, 40))
    nan[3, 4, 5] = np.nan
    nanf = write_mrc(d / "nan.mrc", nan, voxel_size=1.0)
    inf = blob_map((40, 40, 40))
    inf[7, 4, 5] = np.inf
    inff = write_mrc(d / "inf.mrc", inf, voxel_size=1.0)
    flat = write_mrc(d / "flat.mrc", np.zeros((1, 40, 40), np.float32), voxel_size=1.0)
    zeros = write_mrc(d / "zeros.mrc", np.zeros((40, 40, 40), np.float32), voxel_size=1.0)
    mask = write_mrc(d / "mask.mrc", np.ones((40, 40, 30), np.float32), voxel_size=1.0, origin=(0, 0, 0))
    g = str(good)
    warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile warns when writing NaN/Inf on purpose
    return {
        "missing": (["-i", str(d / "nope.mrc")], "nope.mrc"),
        "not_mrc": (["-i", str(text)], "notmrc.mrc"),
        "truncated": (["-i", str(trunc)], "trunc.mrc"),
        "nan": (["-i", str(nanf)], "nan.mrc"),
        "inf": (["-i", str(inff)], "inf.mrc"),
        "half_shape": (["-i", g, "-i2", str(other_shape)], "shape"),
        "half_voxel": (["-i", g, "-i2", str(other_vs)], "voxel size"),
        "half_origin": (["-i", g, "-i2", str(other_origin)], "origin"),
        "mask_shape": (["-i", g, "-m", str(mask)], "mask.mrc"),
        "image_2d": (["-i", str(flat)], "flat.mrc"),
        "empty": (["-i", str(zeros)], "zeros.mrc"),
        "output_is_input": (["-i", g, "-o", g], "input"),
        "output_is_dir": (["-i", g, "-o", str(d)], "directory"),
        "bad_model": (["-i", g, "-p", "tightTarge"], "tightTarget"),
        "bad_stride": (["-i", g, "--stride", "0"], "stride"),
        "bad_lattice": (["-i", g, "--stride", "40", "--lattice", "fcc"], "fcc lattice"),
    }


BAD = ["missing", "not_mrc", "truncated", "nan", "inf", "half_shape", "half_voxel", "half_origin",
       "mask_shape", "image_2d", "empty", "output_is_input", "output_is_dir", "bad_model", "bad_stride",
       "bad_lattice"]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("bad")
    return d, _bad_cases(d)


@pytest.mark.parametrize("case", BAD)
def test_bad_input_clean_error(bad_dir, tiny, capsys, case):
    tmp_path, cases = bad_dir
    argv, needle = cases[case]
    before = {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()}
    if "-o" not in argv:
        argv = argv + ["-o", str(tmp_path / "out.mrc")]
    code = main(argv + ["--weights", str(tiny), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert needle.lower() in lines[0].lower()
    after = {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # inputs untouched, nothing new (no output, no temporary file)


def test_weights_errors_exit_3(tmp_path, tiny, capsys):
    path = write_mrc(tmp_path / "m.mrc", blob_map((40, 40, 40)), voxel_size=1.0)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(tiny.read_bytes()[:-10] + b"corrupted!")
    (tmp_path / "bad.json").write_text(tiny.with_suffix(".json").read_text())
    code = main(["-i", str(path), "-o", str(tmp_path / "o.mrc"), "--weights", str(bad), "-q"])
    err = capsys.readouterr().err
    assert code == 3 and len(err.strip().splitlines()) == 1 and "bad.pt" in err
    assert not (tmp_path / "o.mrc").exists()


def test_input_list_runs_several_jobs_with_one_model(tmp_path, tiny, capsys):
    a = write_mrc(tmp_path / "a.mrc", blob_map((36, 36, 36), seed=7), voxel_size=1.0)
    b1 = write_mrc(tmp_path / "b1.mrc", blob_map((34, 38, 40), seed=8), voxel_size=0.9)
    b2 = write_mrc(tmp_path / "b2.mrc", blob_map((34, 38, 40), seed=9), voxel_size=0.9)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"# two jobs and a broken one\n{a} {tmp_path / 'oa.mrc'}\n"
                    f"{b1} {b2} {tmp_path / 'ob.mrc'}\n{tmp_path / 'missing.mrc'} {tmp_path / 'oc.mrc'}\n")
    code = main(["--inputList", str(jobs), "--weights", str(tiny), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "missing.mrc" in err
    with mrcfile.open(tmp_path / "oa.mrc") as m:
        assert m.data.shape == (36, 36, 36)
    with mrcfile.open(tmp_path / "ob.mrc") as m:
        assert m.data.shape == (34, 38, 40) and m.voxel_size.x == pytest.approx(0.9)
    assert not (tmp_path / "oc.mrc").exists()


# --- the dispatcher and the options shared by enhance and evaluate ------------------------------------------


@pytest.mark.parametrize("words", [[], ["enhance"], ["info"], ["evaluate"], ["simulate"], ["train"],
                                   ["null-response"]])
def test_every_subcommand_help_through_the_dispatcher(words, capsys):
    from deepemhancer_engine.cli import SUBCOMMANDS

    assert set(SUBCOMMANDS) == {"enhance", "info", "evaluate", "simulate", "train", "null-response"}
    with pytest.raises(SystemExit) as exit_:
        main([*words, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    prog = "deepemhancer" if words in ([], ["enhance"]) else f"deepemhancer {words[0]}"
    assert out.startswith(f"usage: {prog} ") and "--debug" in out


def _parse(command: str, argv: list[str]):
    from deepemhancer_engine.cli import build_parser

    required = {"enhance": ["-i", "a.mrc", "-o", "b.mrc"], "evaluate": ["--map", "a.mrc", "--outdir", "d"]}
    return build_parser(command).parse_args(required[command] + argv)


@pytest.mark.parametrize("argv", [[], ["-p", "wideTarget"], ["--processingType", "highRes"], ["-b", "3"],
                                  ["--batch_size", "3"], ["--batch-size", "3"], ["-g", "-1"], ["--device", "cpu"],
                                  ["--weights", "w.pt", "-g", "0,1", "--device", "cuda"]])
def test_network_and_device_options_mean_the_same_in_enhance_and_evaluate(argv):
    from deepemhancer_engine.commands import _args

    enh, ev = _parse("enhance", argv), _parse("evaluate", argv)
    keys = ("model", "weights", "batch_size", "gpu", "device", "amp", "channels_last")
    assert {k: getattr(enh, k) for k in keys} == {k: getattr(ev, k) for k in keys}
    assert _args.inference_config(enh) == _args.inference_config(ev)
    if "3" in argv:
        assert enh.batch_size == 3
    assert _parse("evaluate", ["--model", "m.pdb"] + argv).atomic_model == "m.pdb"  # evaluate's atomic model


def test_precision_options_pass_only_what_is_set():
    from deepemhancer_engine.commands import _args
    from deepemhancer_engine.config import InferenceConfig

    assert _args.precision_options(_parse("enhance", [])) == {}
    assert _args.inference_config(_parse("enhance", [])) == InferenceConfig()
    config = _args.inference_config(_parse("enhance", ["--amp", "bf16", "--channels-last", "off"]))
    assert (config.amp, config.channels_last) == ("bf16", False)
    config = _args.inference_config(_parse("evaluate", ["--amp", "off", "--channels-last", "on"]))
    assert (config.amp, config.channels_last) == ("off", True)


def test_enhance_word_is_the_default_command(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("DEEPEMHANCER_CACHE", "off")  # both runs measure the null response the same way
    path = write_mrc(tmp_path / "m.mrc", blob_map((36, 34, 33), seed=6), voxel_size=1.05)
    a, b = tmp_path / "a.mrc", tmp_path / "b.mrc"
    assert main(["-i", str(path), "-o", str(a), "--weights", str(tiny), "-q"]) == 0
    assert main(["enhance", "-i", str(path), "-o", str(b), "--weights", str(tiny), "-q"]) == 0
    with mrcfile.open(a) as x, mrcfile.open(b) as y:
        assert np.array_equal(x.data, y.data)


def test_input_list_cannot_be_mixed_with_single_job_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--inputList", str(tmp_path / "jobs.txt"), "-i", "a.mrc"])
    assert exit_.value.code == 2 and "--inputList cannot be combined" in capsys.readouterr().err


def test_null_response_subcommand_writes_the_file_beside_the_weights(tmp_path, tiny, capsys):
    import shutil

    pt = Path(shutil.copy(tiny, tmp_path / "tiny.pt"))
    shutil.copy(tiny.with_suffix(".json"), tmp_path / "tiny.json")
    assert main(["null-response", str(pt), "--cubes", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tiny.null.npz")
    assert (tmp_path / "tiny.null.npz").stat().st_size > 0
    assert main(["null-response", str(tmp_path / "missing.pt")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.pt" in err[0]


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--out", "OUT", "--structures", "MISSING.txt"], "cannot read the structure list"),
    (["simulate", "--out", "OUT", "--crop", "20"], "--crop must be a multiple of 8"),
    (["simulate", "--out", "OUT", "--structures", "x/split_eval.txt"], "held-out eval split"),
    (["simulate", "--out", "OUT", "--until", "25:99"], "invalid time '25:99' for --until"),
    (["simulate", "--out", "OUT", "--variety", "sim3"], "did you mean 'sim2'"),
    (["train", "--data", "DATA", "--run-dir", "RUN", "--filters", "16,x"], "--filters must be integers"),
    (["null-response", "W.pt", "--cubes", "0"], "--cubes must be at least 1"),
])
def test_training_commands_bad_options_are_one_line_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_missing_torch_is_one_line_saying_what_to_install(tmp_path):
    """Run where torch cannot be imported: one line naming the package and the install command, exit 4."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    code = ("import sys; sys.modules['torch'] = None\n"
            "from deepemhancer_engine.cli import main\n"
            f"sys.exit(main(['-i', {str(examples / 'half1.mrc')!r}, '-i2', {str(examples / 'half2.mrc')!r}, "
            f"'-o', {str(tmp_path / 'out.mrc')!r}, '-q']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 4, run.stderr
    assert len(lines) == 1 and "'torch' is not installed" in lines[0] and "pip install" in lines[0]
    assert not (tmp_path / "out.mrc").exists()
