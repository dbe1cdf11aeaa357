"""The confidence map: on the output's exact grid, 0..1, only with two half maps, all or nothing on disk, and
high where the halves share detail, near 0 where they share only noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from scipy import ndimage

from deepemhancer_engine.cli import main
from deepemhancer_engine.confidence import confidence_map, read_header_summary, summary
from deepemhancer_engine.io import read_map

SHAPE = (44, 40, 36)  # [z, y, x]


def _structure(shape, seed: int) -> np.ndarray:
    """Atom-like detail: random points blurred to ~2 A, inside a ball filling the middle of the box."""
    rng = np.random.default_rng(seed)
    pts = np.zeros(shape, np.float32)
    idx = tuple(rng.integers(0, n, 3000) for n in shape)
    pts[idx] = 1.0
    zz, yy, xx = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    ball = (zz**2 + yy**2 + xx**2) < (0.33 * min(shape)) ** 2
    return ndimage.gaussian_filter(pts * ball, 1.0).astype(np.float32)


def _write(path: Path, data, voxel_size=(1.3, 1.25, 1.2), origin=(12.5, -7.25, 30.0)) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = voxel_size
        m.header.origin = origin
        m.header.nxstart, m.header.nystart, m.header.nzstart = 3, -2, 5
    return path


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("halves")
    signal = _structure(SHAPE, 0)
    rng = np.random.default_rng(1)
    noise = 0.3 * float(signal.std())
    return tuple(_write(d / f"h{i}.mrc", signal + noise * rng.normal(size=SHAPE)) for i in (1, 2))


def test_confidence_is_on_the_output_grid(tmp_path, tiny, halves):
    out, conf = tmp_path / "out.mrc", tmp_path / "conf.mrc"
    code = main(["-i", str(halves[0]), "-i2", str(halves[1]), "-o", str(out), "--confidence", str(conf),
                 "--weights", str(tiny), "-q"])
    assert code == 0
    (cmap, cgrid), (omap, ogrid) = read_map(conf), read_map(out)
    assert cgrid == ogrid == read_map(halves[0])[1]  # shape, voxel size, origin, nstart, axis order
    with mrcfile.open(conf) as m:
        assert m.data.dtype == np.float32 and int(m.header.mode) == 2
        labels = [bytes(x).decode().strip() for x in m.header.label[: int(m.header.nlabl)]]
    found = read_header_summary(labels)
    assert 0.0 <= found["fraction_trusted"] <= 1.0 and np.isfinite(found["contour"])
    assert cmap.shape == omap.shape == SHAPE
    assert np.isfinite(cmap).all() and cmap.min() >= 0.0 and cmap.max() <= 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.mrc", "out.json", "out.mrc", "out_fsc.tsv"]
    section = json.loads((tmp_path / "out.json").read_text())["confidence"]  # the sidecar's confidence section
    assert section["map"] == str((tmp_path / "conf.mrc").resolve())
    assert section["fraction_trusted"] == pytest.approx(found["fraction_trusted"], abs=1e-4)


def test_single_map_with_confidence_is_a_clean_error(tmp_path, tiny, halves, capsys):
    out, conf = tmp_path / "out.mrc", tmp_path / "conf.mrc"
    code = main(["-i", str(halves[0]), "-o", str(out), "--confidence", str(conf), "--weights", str(tiny), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "two half maps" in err and str(conf) in err
    assert list(tmp_path.iterdir()) == []


def test_confidence_named_like_the_output_is_refused(tmp_path, tiny, halves, capsys):
    out = tmp_path / "out.mrc"
    code = main(["-i", str(halves[0]), "-i2", str(halves[1]), "-o", str(out), "--confidence", str(out),
                 "--weights", str(tiny), "-q"])
    assert code == 2 and "would overwrite out.mrc" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_confidence_file_needs_force_and_is_kept(tmp_path, tiny, halves, capsys):
    out, conf = tmp_path / "out.mrc", tmp_path / "conf.mrc"
    conf.write_bytes(b"keep me")
    code = main(["-i", str(halves[0]), "-i2", str(halves[1]), "-o", str(out), "--confidence", str(conf),
                 "--weights", str(tiny), "-q"])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert conf.read_bytes() == b"keep me" and not out.exists()


def test_a_failed_write_leaves_neither_file(tmp_path, tiny):
    """Pure-noise halves: the confidence map is nearly all zeros, so gzip'ed it fits under the file-size limit
    while the plain output does not; the run fails writing the output and must take the confidence map away."""
    rng = np.random.default_rng(5)
    d = tmp_path / "in"
    d.mkdir()
    h1, h2 = (_write(d / f"h{i}.mrc", rng.normal(size=SHAPE)) for i in (1, 2))
    out, conf = tmp_path / "out.mrc", tmp_path / "conf.mrc.gz"
    limit = 4 * int(np.prod(SHAPE)) // 2  # half the plain output's size
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "from deepemhancer_engine.cli import main; "
            f"sys.exit(main(['-i', {str(h1)!r}, '-i2', {str(h2)!r}, '-o', {str(out)!r}, "
            f"'--confidence', {str(conf)!r}, '--weights', {str(tiny)!r}, '-q']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write" in errors[0] and str(out) in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_shared_detail_is_trusted_and_noise_is_not():
    """Halves = one structure + independent noise: high confidence inside the structure; two independent noise
    fields: confidence near 0 everywhere (its calibration against noise alone)."""
    shape, vs, d = (64, 64, 64), 1.0, 3.0
    signal = _structure(shape, 2)
    rng = np.random.default_rng(3)
    n1, n2 = (ndimage.gaussian_filter(rng.normal(size=shape), 0.7).astype(np.float32) for _ in range(2))
    scale = float(signal.std()) / float(n1.std())
    inside = ndimage.binary_erosion(signal > np.percentile(signal, 70), iterations=2)
    medians = []
    for level in (0.125, 0.25, 0.5):  # noise std relative to the signal's
        conf = confidence_map(signal + level * scale * n1, signal + level * scale * n2, vs, d)
        assert conf.dtype == np.float32 and conf.min() >= 0 and conf.max() <= 1
        medians.append(float(np.median(conf[inside])))
    assert medians[0] > 0.6 and medians[0] > medians[1] > medians[2] > 0.1, medians
    noise_conf = confidence_map(n1, n2, vs, d)
    assert float(np.median(noise_conf)) < 0.05
    assert float(np.mean(noise_conf > 0.5)) < 0.01


def test_summary_counts_trusted_voxels_above_the_contour():
    rng = np.random.default_rng(4)
    enhanced = rng.normal(0, 0.01, (40, 40, 40)).astype(np.float32)
    enhanced[10:20, 10:30, 10:30] = 1.0
    conf = np.zeros_like(enhanced)
    conf[10:15, 10:30, 10:30] = 0.9
    found = summary(enhanced, conf)
    assert 4000 <= found["molecule_voxels"] <= 4000 + 0.005 * enhanced.size  # the block + noise beyond 3 sigma
    assert found["fraction_trusted"] == pytest.approx(0.5, abs=0.02)
    assert 0.03 < found["contour_level"] < 1.0


def test_summary_of_a_flat_solvent_uses_its_own_level(caplog):
    """An enhanced map's solvent is flat by design: the contour is the solvent's level (no warning about a
    masked input, no noise level borrowed from the molecule's density)."""
    import logging

    from deepemhancer_engine.confidence import summary

    enhanced = np.zeros((48, 48, 48), np.float32)
    enhanced[16:32, 16:32, 16:32] = np.random.default_rng(0).random((16, 16, 16)) + 0.5
    with caplog.at_level(logging.WARNING):
        found = summary(enhanced, np.ones_like(enhanced))
    assert "masked" not in caplog.text
    assert found["contour_level"] == 0.0 and found["molecule_voxels"] == 16**3 and found["fraction_trusted"] == 1.0
