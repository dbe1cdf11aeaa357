"""Simulated training pairs: geometry, determinism, noise level, targets and shards (gemmi needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gemmi")

from deepemhancer_engine.training import dataset, simulate  # noqa: E402


def _write_pdb(path: Path, n: int = 160, seed: int = 0, half: float = 9.0) -> Path:
    """A compact blob of bonded-looking C/N/O atoms (a fake protein, ``2 half`` A across), as a PDB file."""
    rng = np.random.default_rng(seed)
    p, pts = np.zeros(3), []
    for _ in range(n):
        step = rng.normal(size=3)
        p = p + 1.5 * step / np.linalg.norm(step)
        p = np.clip(p, -half, half)
        pts.append(p.copy())
    lines = []
    for i, (x, y, z) in enumerate(pts):
        el = "CNO"[i % 3]
        lines.append(
            f"ATOM  {i + 1:5d}  {el:<3s} ALA A{i // 5 + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00          {el:>2s}"
        )
    path.write_text("\n".join(lines) + "\nEND\n")
    return path


@pytest.fixture(scope="module")
def pdb(tmp_path_factory) -> Path:
    return _write_pdb(tmp_path_factory.mktemp("pdb") / "fake.pdb")


def test_pair_fields_and_geometry(pdb):
    p = simulate.simulate_pair(pdb, 3, voxel_size=1.5, resolution=5.0, max_box=48)
    assert p.half1.shape == p.half2.shape == p.model_map.shape == p.tight_mask.shape == p.wide_mask.shape
    assert max(p.half1.shape) <= 48 and p.half1.dtype == np.float32 and p.half1.flags.c_contiguous
    assert p.voxel_size == (1.5, 1.5, 1.5) and len(p.origin) == 3
    assert set(p.targets) == {"tightTarget", "wideTarget"}
    assert not np.allclose(p.half1, p.half2)  # independent noise
    assert 3.5 < p.fsc0143_resolution < 8.0  # near the requested 5 A
    assert np.all(p.wide_mask >= p.tight_mask - 1e-6)
    far = p.wide_mask < 1e-6
    assert np.all(p.targets["tightTarget"][far] == 0) and np.all(p.targets["wideTarget"][far] == 0)


def test_signal_is_what_both_halves_share(pdb):
    """The noise-free signal (the evaluation's in-band truth): the halves minus it are independent noise of the
    level that puts the half-map FSC at 0.143 near the resolution, and the same seed gives the same signal."""
    p = simulate.simulate_pair(pdb, 3, voxel_size=1.5, resolution=5.0, max_box=48)
    assert p.signal is not None and p.signal.dtype == np.float32 and p.signal.shape == p.half1.shape
    n1, n2 = (p.half1 - p.signal).ravel(), (p.half2 - p.signal).ravel()
    assert abs(np.corrcoef(n1, n2)[0, 1]) < 0.05
    assert np.std(n1) == pytest.approx(p.info["noise_scale"], rel=1e-3)  # unit-variance noise times the scale
    again = simulate.simulate_pair(pdb, 3, voxel_size=1.5, resolution=5.0, max_box=48)
    assert np.array_equal(again.signal, p.signal) and np.array_equal(again.half1, p.half1)


def test_deterministic_by_seed(pdb):
    a = simulate.simulate_pair(pdb, 11, max_box=40)
    b = simulate.simulate_pair(pdb, 11, max_box=40)
    c = simulate.simulate_pair(pdb, 12, max_box=40)
    assert np.array_equal(a.half1, b.half1) and a.voxel_size == b.voxel_size
    assert a.voxel_size != c.voxel_size or not np.array_equal(a.half1, c.half1)
    assert 0.6 <= a.voxel_size[0] <= 2.0


def test_ligands_are_in_the_target(pdb):
    with_lig = simulate.simulate_pair(pdb, 5, voxel_size=1.2, resolution=4.0, max_box=48, ligands=True)
    without = simulate.simulate_pair(pdb, 5, voxel_size=1.2, resolution=4.0, max_box=48, ligands=False)
    assert with_lig.info["n_ligands"] >= 1 and without.info["n_ligands"] == 0
    assert len(with_lig.info["ligand_xyz"]) >= 8 and without.info["ligand_xyz"] == []
    assert with_lig.model_map.sum() > without.model_map.sum()


def test_shard_roundtrip(pdb, tmp_path):
    job = dataset.Job(str(pdb), 21, str(tmp_path / "fake__s21.npz"))
    arrays = dataset.make_crops(job.structure, job.seed, crop=16, n_crops=3)
    assert arrays["x_noise"].shape == (3, 16, 16, 16) and arrays["x_noise"].dtype == np.float16
    np.savez_compressed(job.out, **arrays)
    split = "val" if dataset.is_validation("fake") else "train"
    ds = dataset.CropDataset(dataset.list_shards(tmp_path, split), target="wideTarget", input_key="x_mask")
    x, y = ds.get(0)
    assert len(ds) == 3 and x.shape == y.shape == (16, 16, 16) and x.dtype == np.float32


def test_refuses_eval_split(tmp_path):
    from argparse import Namespace

    from deepemhancer_engine.commands import simulate
    from deepemhancer_engine.errors import InputError

    args = Namespace(structures="/x/split_eval.txt", root=None, out=str(tmp_path / "out"), limit=None,
                     pairs_per_structure=1, seed=0, workers=1, until=None, crop=48)
    with pytest.raises(InputError, match="held-out eval split"):
        simulate.main(args)
    assert not (tmp_path / "out").exists()


def test_stored_cube_edge_follows_the_job(pdb, tmp_path):
    (job,) = dataset.plan_jobs([pdb], tmp_path, 1, 0, crop=16)
    assert job.crop == 16 and dataset.plan_jobs([pdb], tmp_path, 1, 0)[0].crop == dataset.STORE_CROP
    out, status = dataset.run_job(job)
    assert status == "ok"
    with np.load(out) as shard:
        assert shard["x_noise"].shape[1:] == (16, 16, 16) and shard["tightTarget"].shape[1:] == (16, 16, 16)
    assert dataset.run_job(job) == (out, "exists")


def test_a_failed_shard_write_leaves_no_file(tmp_path, monkeypatch):
    arrays = {"x_noise": np.zeros((1, 4, 4, 4), np.float16), "resolution": np.ones(1, np.float32)}
    monkeypatch.setattr(dataset, "make_crops", lambda *a, **k: arrays)
    job = dataset.Job("fake.pdb", 1, str(tmp_path / "fake__s1.npz"), 4)

    def fail(fh, **kw):
        fh.write(b"half a shard")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dataset.np, "savez_compressed", fail)
    with pytest.raises(OSError):
        dataset.run_job(job)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(dataset, "make_crops", lambda *a, **k: arrays)
    assert dataset.run_job(job) == (job.out, "ok")
    assert [p.name for p in tmp_path.iterdir()] == ["fake__s1.npz"] and dataset.list_shards(tmp_path, "val") + \
        dataset.list_shards(tmp_path, "train") == [Path(job.out)]
