"""Trainer: augmentation pairing, a tiny run that exports weights + card, and resuming."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from deepemhancer_engine.training import augment
from deepemhancer_engine.training.dataset import is_validation
from deepemhancer_engine.training.trainer import TrainConfig, train
from deepemhancer_engine.weights import ModelCard, sha256_file


def test_rotate_flip_keeps_pairs():
    rng = np.random.default_rng(0)
    x = torch.randn(3, 1, 8, 8, 8)
    a, b = augment.rotate_flip(x, x.clone(), rng)
    assert torch.equal(a, b) and a.shape == x.shape
    assert torch.allclose(a.sum(dim=(1, 2, 3, 4)), x.sum(dim=(1, 2, 3, 4)), atol=1e-4)


def test_noise_cube_and_corruption():
    rng = np.random.default_rng(1)
    n = augment.noise_cube(16, rng)
    assert 0.07 < n.std() < 0.14 and abs(n.mean()) < 0.05
    x = torch.ones(2, 1, 16, 16, 16)
    y = augment.blur_and_corrupt(x, rng, p_blur=1.0, p_patch=1.0)
    assert y.shape == x.shape and not torch.equal(x, y)
    assert torch.equal(x, torch.ones_like(x))  # input untouched


def _stems():
    val = next(f"s{i}" for i in range(1000) if is_validation(f"s{i}"))
    tr = next(f"s{i}" for i in range(1000) if not is_validation(f"s{i}"))
    return tr, val


def _fake_shards(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for stem in _stems():
        y = rng.normal(size=(4, 16, 16, 16)).astype(np.float32)
        x = y + 0.1 * rng.normal(size=y.shape).astype(np.float32)
        np.savez_compressed(folder / f"{stem}__s1.npz", x_noise=x.astype(np.float16), x_mask=x.astype(np.float16),
                            tightTarget=y.astype(np.float16), wideTarget=y.astype(np.float16),
                            mask_ratio=np.ones(4, np.float32), resolution=np.full(4, 3.0, np.float32),
                            meta=np.array("{}"))


def test_tiny_training_exports_and_resumes(tmp_path):
    _fake_shards(tmp_path)
    cfg = TrainConfig(data=tmp_path, run_dir=tmp_path / "run", filters=(2, 4, 8), crop=16, small_crop=8,
                      batch=2, epoch_steps=2, val_cubes=2, max_steps=4, export=tmp_path / "w" / "tightTarget.pt",
                      device="cpu", threads=1)
    state = train(cfg)
    assert state["step"] == 4 and len(state["history"]) == 2
    card = ModelCard.from_json(tmp_path / "w" / "tightTarget.json")
    assert card.sha256 == sha256_file(tmp_path / "w" / "tightTarget.pt")
    assert card.tile == 16 and card.training["steps"] == 4 and card.normalization == "noise"
    assert card.training["augmentation"].startswith("random crop from the stored 16^3 cubes")
    assert (tmp_path / "run" / "loss.png").exists() and (tmp_path / "run" / "last.ckpt").exists()
    from dataclasses import replace

    state2 = train(replace(cfg, max_steps=6))
    assert state2["step"] == 6 and len(state2["history"]) == 3  # resumed, not restarted
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in hist] == [2, 4, 6]


def test_cli_train_and_simulate_args(tmp_path):
    import argparse

    from deepemhancer_engine.commands import simulate, train

    _fake_shards(tmp_path)
    parser = argparse.ArgumentParser()
    train.add_args(parser)
    args = parser.parse_args(["--data", str(tmp_path), "--run-dir", str(tmp_path / "r"), "--filters", "2,4,8",
                              "--crop", "16", "--small-crop", "8", "--batch", "2", "--epoch-steps", "1",
                              "--val-cubes", "2", "--max-steps", "1", "--threads", "1", "--device", "cpu",
                              "--band-limit", "--export", str(tmp_path / "m.pt")])
    assert train.main(args) == 0 and (tmp_path / "m.json").exists()
    sim = argparse.ArgumentParser()
    simulate.add_args(sim)
    assert sim.parse_args(["--out", "x"]).out == "x"


def test_loader_processes_half_weights_and_card_text(tmp_path):
    """Batches made in loader processes train; float16 export loads back into the fp32 network."""
    from deepemhancer_engine.weights import load_model

    _fake_shards(tmp_path)
    cfg = TrainConfig(data=tmp_path, run_dir=tmp_path / "run", filters=(2, 4, 8), crop=16, small_crop=8,
                      batch=2, epoch_steps=2, val_cubes=2, max_steps=4, export=tmp_path / "w" / "tightTarget.pt",
                      device="cpu", threads=1, workers=2, amp=True, half_weights=True)
    state = train(cfg)
    assert state["step"] == 4
    saved = torch.load(tmp_path / "w" / "tightTarget.pt", weights_only=True)
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.float16}
    net, card = load_model("tightTarget", tmp_path / "w" / "tightTarget.pt")
    assert next(net.parameters()).dtype == torch.float32
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    for k, v in net.state_dict().items():
        assert torch.allclose(v, best[k].half().float()), k
    assert card.training["device"].startswith("cpu")
    from deepemhancer_engine.runner import cpu_has_fast_bf16

    amp = ", bf16 autocast" if cpu_has_fast_bf16() else ""
    assert card.notes.startswith(f"Compact 2/4/8 U-Net trained on CPU (1 threads{amp})")


def test_half_written_shards_are_not_listed(tmp_path):
    """A generation stopped by --until can leave temporary files; training must not read them."""
    from deepemhancer_engine.training.dataset import list_shards

    _fake_shards(tmp_path)
    tr, val = _stems()
    (tmp_path / f"{tr}__s2.npz.tmp77.npz").write_bytes(b"partial")  # a temporary name ending in .npz
    (tmp_path / f"{tr}__s3.npz.tmp78").write_bytes(b"partial")
    assert [p.name for p in list_shards(tmp_path, "train")] == [f"{tr}__s1.npz"]
    assert [p.name for p in list_shards(tmp_path, "val")] == [f"{val}__s1.npz"]


def test_amp_only_where_bf16_is_native():
    """--amp means bf16 autocast on CUDA and on CPUs with native bf16; never without --amp."""
    from deepemhancer_engine.runner import cpu_has_fast_bf16
    from deepemhancer_engine.training.trainer import use_amp

    on = TrainConfig(data=Path("."), run_dir=Path("."), amp=True)
    off = TrainConfig(data=Path("."), run_dir=Path("."), amp=False)
    assert use_amp(on, "cuda") and not use_amp(off, "cuda") and not use_amp(off, "cpu")
    assert use_amp(on, "cpu") == cpu_has_fast_bf16()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_fails_before_the_run_folder(tmp_path):
    """--device cuda without a GPU: the engine's one-line DeviceError, and no run folder left behind."""
    from deepemhancer_engine.errors import DeviceError

    _fake_shards(tmp_path)
    cfg = TrainConfig(data=tmp_path, run_dir=tmp_path / "run", device="cuda", threads=1)
    with pytest.raises(DeviceError) as info:
        train(cfg)
    assert "no GPU is available" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_log_file_handler_removed_on_error(tmp_path):
    """A run that fails (here: no validation cubes) leaves no handler writing to its train.log."""
    import logging

    from deepemhancer_engine.errors import InputError

    tr, _ = _stems()
    _fake_shards(tmp_path)
    for p in tmp_path.glob("*.npz"):
        if not p.name.startswith(f"{tr}__"):
            p.unlink()
    logger = logging.getLogger("deepemhancer_engine.training")
    before = list(logger.handlers)
    with pytest.raises(InputError, match="no validation cubes"):
        train(TrainConfig(data=tmp_path, run_dir=tmp_path / "run", device="cpu", threads=1))
    assert logger.handlers == before
    assert not (tmp_path / "run").exists()  # a run that never started leaves no folder behind


def test_run_folder_holds_no_temporary_files(tmp_path):
    """Checkpoints, best state, history and loss curve are written all or nothing (temp file + rename)."""
    _fake_shards(tmp_path)
    cfg = TrainConfig(data=tmp_path, run_dir=tmp_path / "run", filters=(2, 4, 8), crop=16, small_crop=8,
                      batch=2, epoch_steps=1, val_cubes=2, max_steps=2, device="cpu", threads=1)
    train(cfg)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["best.pt", "history.json", "last.ckpt", "loss.png", "train.log"]


def test_trainer_keeps_its_thread_count():
    """The device chooser caps threads at the usable CPUs for inference; training uses cfg.threads as given."""
    from deepemhancer_engine.training.trainer import _choose_device

    before = torch.get_num_threads()
    many = (os.cpu_count() or 1) + 2
    try:
        assert _choose_device(TrainConfig(data=Path("."), run_dir=Path("."), device="cpu", threads=many)) == "cpu"
        assert torch.get_num_threads() == many
    finally:
        torch.set_num_threads(before)


def test_non_finite_step_is_skipped_not_applied(tmp_path, caplog):
    """A batch whose loss is NaN (bf16 autocast on some CPUs gives one now and then) must not reach the
    weights: one such update makes them NaN for good and nothing is ever exported."""
    from deepemhancer_engine.training.trainer import Trainer

    _fake_shards(tmp_path)
    cfg = TrainConfig(data=tmp_path, run_dir=tmp_path / "run", filters=(2, 4, 8), crop=16, small_crop=8,
                      batch=2, epoch_steps=2, val_cubes=2, max_steps=4, device="cpu", threads=1)
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, "cpu")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    x = torch.randn(2, 1, 8, 8, 8)
    y = x.clone()
    y[0, 0, 0, 0, 0] = float("nan")
    with caplog.at_level("WARNING"):
        assert np.isnan(trainer.step(x, y))
    assert trainer.state["step"] == 1 and trainer.state["skipped_steps"] == 1
    assert "step skipped" in caplog.text
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert np.isfinite(trainer.step(x, x.clone()))  # a finite batch still trains
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_spectral_noise_cubes_cover_falling_flat_and_rising():
    """--noise-cubes spectra: solvent-like level, zero mean, and spectra that fall and rise across cubes."""
    rng = np.random.default_rng(3)
    slopes = []
    for _ in range(40):
        n = augment.make_noise_cube("spectra", 32, rng)
        assert n.shape == (32, 32, 32) and 0.07 < n.std() < 0.14 and abs(n.mean()) < 0.05
        p = np.abs(np.fft.rfftn(n)) ** 2
        k = np.sqrt(np.add.outer(np.add.outer(np.fft.fftfreq(32) ** 2, np.fft.fftfreq(32) ** 2),
                                 np.fft.rfftfreq(32) ** 2))
        low, mid = p[(k > 0.05) & (k < 0.1)].mean(), p[(k > 0.15) & (k < 0.2)].mean()
        slopes.append(np.log10(mid / low))
    assert min(slopes) < -0.5 and max(slopes) > 0.2  # some fall, some rise
    assert augment.make_noise_cube("blur", 16, np.random.default_rng(0)).shape == (16, 16, 16)


def test_fine_tune_card_names_its_data_version_and_lineage(tmp_path):
    """Weights fine-tuned on sim2 shards get a sim2 version and keep the history of the weights they came from."""
    from deepemhancer_engine.weights import load_model

    _fake_shards(tmp_path)
    for f in tmp_path.glob("*.npz"):  # relabel the fake shards as sim2 data
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["meta"] = np.array(json.dumps({"variety": "sim2"}))
        np.savez_compressed(f, **arrays)
    base = dict(data=tmp_path, filters=(2, 4, 8), crop=16, small_crop=8, batch=2, epoch_steps=2, val_cubes=2,
                max_steps=2, device="cpu", threads=1)
    train(TrainConfig(run_dir=tmp_path / "r1", export=tmp_path / "w1" / "tightTarget.pt", **base))
    _, parent = load_model("tightTarget", tmp_path / "w1" / "tightTarget.pt")
    train(TrainConfig(run_dir=tmp_path / "r2", export=tmp_path / "w2" / "tightTarget.pt",
                      init=tmp_path / "w1" / "tightTarget.pt", **base))
    _, child = load_model("tightTarget", tmp_path / "w2" / "tightTarget.pt")
    assert parent.version.endswith("-sim2") and child.version.endswith("-sim2")
    assert parent.training["history"] == []
    (step,) = child.training["history"]
    assert step["sha256"] == parent.sha256 and step["version"] == parent.version and step["steps"] == 2
