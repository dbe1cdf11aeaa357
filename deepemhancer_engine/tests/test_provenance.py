"""Provenance beside an enhanced map: the JSON sidecar, the half-map FSC curve, the MRC header labels,
and ``--threads`` honoured by the process that runs the network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from deepemhancer_engine import provenance
from deepemhancer_engine.cli import main
from deepemhancer_engine.evaluate import CURVE_AXIS_COLUMNS, RAW_HALVES, curve_column
from deepemhancer_engine.io import read_map
from deepemhancer_engine.metrics import fsc
from deepemhancer_engine.tests.test_cli import blob_map, digest, write_mrc
from deepemhancer_engine.weights import ModelCard

SHAPE = (40, 36, 32)


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("maps")
    return (write_mrc(d / "h1.mrc", blob_map(SHAPE, seed=1, noise=0.2)),
            write_mrc(d / "h2.mrc", blob_map(SHAPE, seed=1, noise=0.0)
                      + np.random.default_rng(7).normal(0, 0.2, SHAPE).astype(np.float32)))


def header_labels(path) -> list[str]:
    with mrcfile.open(path) as m:
        return [m.header.label[i].decode().strip() for i in range(int(m.header.nlabl))]


def half_map_fsc(halves):
    (a, grid), (b, _) = read_map(halves[0]), read_map(halves[1])
    return fsc(a, b, grid.voxel_size)


def test_sidecar_curve_and_labels(tmp_path, tiny, halves):
    out = tmp_path / "out.mrc"
    assert main(["-i", str(halves[0]), "-i2", str(halves[1]), "-o", str(out), "--weights", str(tiny),
                 "--stride", "24", "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.mrc", "out_fsc.tsv"]
    record = json.loads((tmp_path / "out.json").read_text())
    assert list(record)[:len(provenance.SIDECAR_KEYS)] == list(provenance.SIDECAR_KEYS)
    card = ModelCard.from_dict(json.loads(tiny.with_suffix(".json").read_text()))
    assert record["weights"]["sha256"] == card.sha256 and len(card.sha256) == 64
    assert record["weights"]["name"] == card.name and "simulated" in record["weights"]["trained_on"]
    assert record["inputs"] == [str(h.resolve()) for h in halves]
    assert record["command"][:3] == ["deepemhancer", "-i", str(halves[0])]
    assert record["options"]["tiling"]["stride"] == 24
    assert record["options"]["inference"]["null_correction"] is True
    expected = half_map_fsc(halves)
    d_half = expected.resolution(0.143)
    res = record["resolution"]
    assert res["half_map_fsc0.143_A"] == pytest.approx(d_half, rel=1e-4)
    assert res["limit_A"] == pytest.approx(d_half, rel=1e-4) and res["limited"] is True
    assert record["output"]["shape_zyx"] == list(SHAPE)
    assert record["timings_s"]["total"] >= record["timings_s"]["network"] > 0
    # the curve: evaluate's columns, the raw halves' FSC
    lines = (tmp_path / "out_fsc.tsv").read_text().splitlines()
    assert lines[0].split("\t") == [*CURVE_AXIS_COLUMNS, curve_column(RAW_HALVES)]
    values = np.array([[float(v) for v in ln.split("\t")] for ln in lines[1:]])
    assert np.allclose(values[:, 2], expected.fsc, atol=1e-4)
    labels = header_labels(out)
    assert any(label.startswith("deepemhancer ") for label in labels)
    assert f"weights {card.name} {card.version or '?'} sha256:{card.sha256[:12]}" in labels
    assert f"resolution limit {d_half:.3g} A" in labels


def test_single_map_and_no_limit(tmp_path, tiny, halves):
    out = tmp_path / "single.mrc"
    assert main(["-i", str(halves[0]), "-o", str(out), "--weights", str(tiny), "--no-resolution-limit",
                 "--no-null-correction", "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["single.json", "single.mrc"]  # no curve: one map
    res = json.loads((tmp_path / "single.json").read_text())["resolution"]
    assert res == {"half_map_fsc0.143_A": None, "limit_A": None, "limited": False, "null_correction": False}
    assert "no resolution limit" in header_labels(out)


def test_resolution_given_with_half_maps(tmp_path, tiny, halves):
    out = tmp_path / "given.mrc"
    assert main(["-i", str(halves[0]), "-i2", str(halves[1]), "-o", str(out), "--weights", str(tiny),
                 "--resolution", "9.5", "-q"]) == 0
    res = json.loads((tmp_path / "given.json").read_text())["resolution"]
    assert res["limit_A"] == 9.5 and res["limited"] is True
    assert res["half_map_fsc0.143_A"] == pytest.approx(half_map_fsc(halves).resolution(0.143), rel=1e-4)
    assert "resolution limit 9.5 A" in header_labels(out)


@pytest.mark.parametrize("confidence", [False, True])
def test_voxel_size_override_reaches_the_fsc(tmp_path, tiny, halves, confidence):
    """-s replaces the header's voxel size before the half-map FSC is measured: twice the voxel size, twice
    the FSC-0.143 in A, in the sidecar, the limit and the curve (with and without the confidence map)."""
    header = half_map_fsc(halves)
    vs = 2 * float(read_map(halves[0])[1].voxel_size[0])
    out = tmp_path / "s.mrc"
    extra = ["--confidence", str(tmp_path / "c.mrc")] if confidence else []
    assert main(["-i", str(halves[0]), "-i2", str(halves[1]), "-o", str(out), "--weights", str(tiny),
                 "-s", str(vs), "-q", *extra]) == 0
    res = json.loads((tmp_path / "s.json").read_text())["resolution"]
    assert res["half_map_fsc0.143_A"] == pytest.approx(2 * header.resolution(0.143), rel=5e-3)
    assert res["limit_A"] == pytest.approx(res["half_map_fsc0.143_A"], rel=1e-6)
    last = (tmp_path / "s_fsc.tsv").read_text().splitlines()[-1].split("\t")
    assert float(last[1]) == pytest.approx(2 * vs, rel=0.02)  # Nyquist at the given voxel size


def test_failed_sidecar_leaves_nothing(tmp_path, tiny, halves):
    (tmp_path / "out.json").mkdir()  # the sidecar cannot replace a directory
    before = {p.name: digest(p) for p in halves}
    assert main(["-i", str(halves[0]), "-i2", str(halves[1]), "-o", str(tmp_path / "out.mrc"),
                 "--weights", str(tiny), "-q"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no map, no curve, no temporary file
    assert {p.name: digest(p) for p in halves} == before


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_honoured(tmp_path, tiny, halves, threads):
    """A fresh process (as Scipion starts it): torch and the BLAS/OpenMP environment use N threads."""
    out = tmp_path / "t.mrc"
    res = subprocess.run([sys.executable, "-m", "deepemhancer_engine", "-i", str(halves[0]), "-o", str(out),
                          "--weights", str(tiny), "--device", "cpu", "--threads", str(threads)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    recorded = json.loads((tmp_path / "t.json").read_text())["threads"]
    assert recorded == {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                        "OPENBLAS_NUM_THREADS": str(threads), "torch": threads}
    assert f"Running on CPU with {threads} threads" in res.stderr


def test_threads_must_be_positive(tmp_path, tiny, halves, capsys):
    assert main(["-i", str(halves[0]), "-o", str(tmp_path / "o.mrc"), "--weights", str(tiny), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_paths():
    assert provenance.sidecar_path("/a/b/out.mrc") == Path("/a/b/out.json")
    assert provenance.sidecar_path("out.mrc.gz") == Path("out.json")
    assert provenance.fsc_path("x/enh.map") == Path("x/enh_fsc.tsv")


def test_plugin_reads_the_files_the_engine_writes():
    """The plugin never imports the engine: its constants name the sidecar and curve files itself."""
    import ast

    constants = Path(__file__).resolve().parents[2] / "deepemhancer_plugin" / "constants.py"
    if not constants.exists():
        pytest.skip("the Scipion plugin is not beside the engine")
    values = {n.targets[0].id: n.value.value for n in ast.parse(constants.read_text()).body
              if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)}
    out = Path(values["OUTPUT_MAP"])
    assert provenance.sidecar_path(out) == Path(values["OUTPUT_SIDECAR"])
    assert provenance.fsc_path(out) == Path(values["OUTPUT_FSC"])


def test_sidecars_are_outputs_too(tmp_path, tiny, halves, capsys):
    """OUT.json and OUT_fsc.tsv are never overwritten without --force, the confidence map may not take
    their names, and a one-map run over a half-map run's files leaves no stale FSC curve."""
    out = tmp_path / "out.mrc"
    (tmp_path / "out.json").write_text("{}")
    args = ["-i", str(halves[0]), "-i2", str(halves[1]), "-o", str(out), "--weights", str(tiny), "-q"]
    assert main(args) == 2 and "out.json: output file exists; use --force" in capsys.readouterr().err
    assert (tmp_path / "out.json").read_text() == "{}" and not out.exists()
    assert main([*args, "--force", "--confidence", str(tmp_path / "out.json")]) == 2
    assert "would overwrite out.json" in capsys.readouterr().err and (tmp_path / "out.json").read_text() == "{}"
    assert main([*args, "--force"]) == 0 and (tmp_path / "out_fsc.tsv").exists()
    assert main(["-i", str(halves[0]), "-o", str(out), "--weights", str(tiny), "-q", "--force"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.mrc"]
