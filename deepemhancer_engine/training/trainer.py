"""The trainer: L1 loss, Adam (lr 1e-3, halved after ``patience`` epochs without improvement),
batch 8, random cubes with 90-degree rotations, blur and patch corruption, a structure-level
validation split, resumable checkpoints, a loss-curve PNG and a time limit.

A run directory holds ``last.ckpt`` (model, optimiser, scheduler, history, RNG: resumes),
``best.pt`` (best validation state dict), ``history.json``, ``train.log`` lines via logging and
``loss.png``. With ``export`` set, the best weights and their model card are written there
(:func:`weights.save_weights`) every ``export_every_min`` minutes and when the time limit is reached.

:func:`train` is the entry point; :class:`Trainer` holds one run's model, optimiser and history and
names its steps (resume, step, end of epoch, checkpoint, export).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import InferenceConfig
from ..errors import InputError
from ..io import atomic_write
from ..runner import select_device
from ..version import __version__
from . import augment
from .dataset import CropDataset, list_shards, shard_variety, stored_edge

log = logging.getLogger(__name__)
_TRAINING_LOGGER = "deepemhancer_engine.training"  # the package logger, so train.log also gets the dataset's warnings


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    run_dir: Path
    name: str = "tightTarget"
    target: str = "tightTarget"
    normalization: str = "noise"  # noise (AUTO inputs) | mask (MASK-mode inputs)
    max_resolution: float | None = None
    filters: tuple[int, ...] = (16, 32, 64)
    crop: int = 48
    small_crop: int = 32
    p_small: float = 0.65
    batch: int = 8
    lr: float = 1e-3
    patience: int = 5
    epoch_steps: int = 50
    val_cubes: int = 48
    noise_fraction: float = 0.1
    noise_cubes: str = "blur"  # augment.NOISE_CUBES
    band_limit: bool = False
    hours: float | None = None
    deadline: float | None = None
    max_steps: int | None = None
    init: Path | None = None
    export: Path | None = None
    export_every_min: float = 20.0
    device: str = "auto"
    threads: int = 2
    workers: int = 0  # batch-making processes (0: made in the training process, bit-reproducible)
    amp: bool = False  # bf16 autocast for the forward pass on CUDA, and on CPUs with native bf16 (AMX)
    half_weights: bool = False  # export the state dict in float16 (half the file size)
    seed: int = 0
    notes: str = ""


def _code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"deepemhancer_engine {__version__}" + (f" (git {rev}, training code uncommitted or later)" if rev else "")


def _torch_save(obj, path: Path) -> None:
    """``torch.save`` all or nothing: a run killed while writing keeps the previous file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _cubes(cfg: TrainConfig, shards: list[Path], input_key: str) -> CropDataset:
    """The cubes of ``shards`` with this run's target, input normalisation, subset and band limit."""
    return CropDataset(shards, target=cfg.target, input_key=input_key, max_resolution=cfg.max_resolution,
                       band_limited=cfg.band_limit)


class _Batches:
    """Random training batches: stored cubes (cropped, rotated, degraded) plus pure-noise cubes."""

    def __init__(self, ds: CropDataset, cfg: TrainConfig, rng: np.random.Generator) -> None:
        self.ds, self.cfg, self.rng = ds, cfg, rng

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, rng = self.cfg, self.rng
        size = cfg.small_crop if rng.random() < cfg.p_small else cfg.crop
        xs, ys = [], []
        for _ in range(cfg.batch):
            if rng.random() < cfg.noise_fraction:
                x = augment.make_noise_cube(cfg.noise_cubes, size, rng)
                y = np.zeros_like(x)
            else:
                x, y = augment.random_crop(*self.ds.get(int(rng.integers(len(self.ds)))), size, rng)
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        x = torch.from_numpy(np.stack(xs)[:, None])
        y = torch.from_numpy(np.stack(ys)[:, None])
        x, y = augment.rotate_flip(x, y, rng)
        return augment.blur_and_corrupt(x, rng), y

    def close(self) -> None:
        """Nothing to end: batches are made in this process."""


def _produce(out, shards: list[Path], cfg: TrainConfig, input_key: str, seed: int, worker: int) -> None:
    """Loader process: endless batches into the queue ``out`` (tensors travel through shared memory)."""
    torch.set_num_threads(1)
    batches = _Batches(_cubes(cfg, shards, input_key), cfg, np.random.default_rng([seed, worker]))
    while True:
        out.put(batches.next())


class _WorkerBatches:
    """Batches made by ``cfg.workers`` loader processes, each with its own generator; :meth:`close`
    ends them at once (a DataLoader over an endless stream can take a minute to shut down)."""

    def __init__(self, cfg: TrainConfig, input_key: str, seed: int) -> None:
        import torch.multiprocessing as tmp

        ctx = tmp.get_context("fork" if "fork" in tmp.get_all_start_methods() else "spawn")
        self.queue = ctx.Queue(maxsize=4 * cfg.workers)
        shards = list_shards(cfg.data, "train")
        self.procs = [ctx.Process(target=_produce, args=(self.queue, shards, cfg, input_key, seed, i), daemon=True)
                      for i in range(cfg.workers)]
        for proc in self.procs:
            proc.start()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            try:
                x, y = self.queue.get(timeout=60)
                return x.clone(), y.clone()  # own memory: the shared segment is released at once
            except queue.Empty as exc:  # a loader died?
                dead = [p.exitcode for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"training loader process(es) stopped (exit codes {dead})") from exc

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.join(timeout=5)
        self.queue.cancel_join_thread()
        self.queue.close()


def _mean_finite(values: list[float]) -> float:
    """Mean of the finite values (skipped steps report NaN); NaN when there are none."""
    kept = [v for v in values if math.isfinite(v)]
    return float(np.mean(kept)) if kept else float("nan")


def _finite(loss: torch.Tensor, model: torch.nn.Module) -> bool:
    """Whether the loss and every gradient of ``model`` are finite (one device sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    total = loss.detach().float() + sum((g.float().sum() for g in grads), torch.zeros((), device=loss.device))
    return bool(torch.isfinite(total))


def _batch_source(ds: CropDataset, cfg: TrainConfig, rng: np.random.Generator, input_key: str, step: int):
    """Where batches come from: this process (``workers`` 0, bit-reproducible), or loader processes."""
    if cfg.workers <= 0:
        return _Batches(ds, cfg, rng)
    return _WorkerBatches(cfg, input_key, seed=cfg.seed * 1_000_003 + step)


def _device_name(device: str) -> str:
    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _validation_set(cfg: TrainConfig, input_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    val = _cubes(cfg, list_shards(cfg.data, "val"), input_key)
    if len(val) == 0:
        raise InputError(f"{cfg.data}: no validation cubes (no shard of a validation structure"
                         + (f" with resolution better than {cfg.max_resolution} A" if cfg.max_resolution else "")
                         + "; simulate more structures)")
    rng = np.random.default_rng(12345)
    idx = rng.choice(len(val), size=min(cfg.val_cubes, len(val)), replace=False)
    xs, ys = zip(*(val.get(int(i)) for i in sorted(idx)))
    x = np.stack([augment.centre_crop(a, cfg.crop) for a in xs])[:, None]
    y = np.stack([augment.centre_crop(a, cfg.crop) for a in ys])[:, None]
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, device, batch: int = 8) -> dict[str, float]:
    """Mean L1 on the validation cubes, and the mean |output| on pure noise (should be ~0)."""
    model.eval()
    l1, n = 0.0, 0
    for i in range(0, len(x), batch):
        out = model(x[i : i + batch].to(device))
        l1 += float((out - y[i : i + batch].to(device)).abs().sum())
        n += out.numel()
    rng = np.random.default_rng(99)
    noise = torch.from_numpy(np.stack([augment.noise_cube(x.shape[-1], rng) for _ in range(4)])[:, None])
    noise_out = float(model(noise.to(device)).abs().mean())
    model.train()
    return {"val_l1": l1 / n, "noise_abs": noise_out}


def _plot(history: list[dict], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not history:
        return
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [h["train_l1"] for h in history], label="train L1 (running)")
    ax.plot(steps, [h["val_l1"] for h in history], label="validation L1")
    ax.plot(steps, [h["noise_abs"] for h in history], label="mean |output| on pure noise", alpha=0.7)
    ax.set_xlabel("step (batch 8)")
    ax.set_ylabel("L1 (normalised units)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def _lineage(init: Path | None) -> list[dict]:
    """The weights a fine-tune started from, oldest first (their card's own history, then them): version,
    SHA-256, device, steps and data, so that results made with earlier weights stay traceable."""
    if init is None:
        return []
    card_file = Path(init).with_suffix(".json")
    try:
        card = json.loads(card_file.read_text())
    except (OSError, ValueError):  # a run's best.pt has no card: name the file only
        return [{"file": Path(init).name}]
    training = card.get("training", {})
    dataset = training.get("dataset", {})
    return list(training.get("history", [])) + [{
        "file": Path(init).name, "version": card.get("version"), "sha256": card.get("sha256"),
        "device": training.get("device"), "steps": training.get("steps"), "cubes_seen": training.get("cubes_seen"),
        "data": dataset.get("variety", "sim1") if isinstance(dataset, dict) else None}]


def card_fields(cfg: TrainConfig, state: dict, device: str) -> dict:
    """Model-card fields (see weights.ModelCard) describing this run."""
    best = state.get("best", {})
    data_meta = {}
    meta_file = Path(cfg.data) / "dataset.json"
    if meta_file.exists():
        data_meta = json.loads(meta_file.read_text())
    edge = stored_edge(cfg.data)
    subset = f" restricted to pairs with half-map FSC-0.143 < {cfg.max_resolution} A" if cfg.max_resolution else ""
    target_text = {
        "tightTarget": "LocScale-like local sharpening of the simulated map (model-derived local amplitudes, "
                       "low-passed at the measured half-map FSC-0.143 resolution) times a tight soft model mask "
                       "(1 within 2 A of an atom, 2.5 A cosine edge)",
        "wideTarget": "the same locally sharpened map times a wide soft model mask (1 within 5 A of an atom, "
                      "5 A cosine edge)",
    }[cfg.target]
    return {
        "name": cfg.name,
        "arch": "unet3d",
        "tile": cfg.crop,
        "voxel_size": 1.0,
        "normalization": cfg.normalization,
        "target": target_text + subset + "; see docs/model_card.md",
        "training": {
            "device": device,
            "steps": state["step"],
            "cubes_seen": state["step"] * cfg.batch,
            "best_step": best.get("step"),
            "validation_l1": best.get("val_l1"),
            "validation_noise_abs": best.get("noise_abs"),
            "wall_hours": round(state.get("elapsed", 0.0) / 3600, 3),
            "batch": cfg.batch,
            "crop": f"{cfg.small_crop}^3 (p={cfg.p_small}) or {cfg.crop}^3 per batch" if cfg.p_small > 0
                    else f"{cfg.crop}^3",
            "lr": cfg.lr,
            "loss": "L1",
            "optimizer": "Adam, lr halved after %d epochs of %d steps without improvement"
                         % (cfg.patience, cfg.epoch_steps),
            "augmentation": "random crop from the stored %s cubes, 90-degree rotations + flip, Gaussian blur "
                            "(p=0.2), patch corruption (p=0.2), %.0f%% pure-noise cubes with zero target%s"
                            % (f"{edge}^3" if edge else "training", 100 * cfg.noise_fraction,
                               " (falling, flat and rising spectra, some low-passed)" if cfg.noise_cubes == "spectra"
                               else ""),
            "initialised_from": str(cfg.init.name) if cfg.init else None,
            "history": _lineage(cfg.init),
            "data": f"simulated pairs from the train split of ../shared/structures{subset} "
                    "(structure-level 8% validation split)",
            "dataset": data_meta,
            "code_version": _code_version(),
        },
        "version": f"{__version__}-{shard_variety(cfg.data) or 'sim1'}",
        "license": "Apache-2.0",
        "notes": (_network_text(cfg, device) + " " + cfg.notes).strip(),
    }


def _network_text(cfg: TrainConfig, device: str) -> str:
    filters = "/".join(map(str, cfg.filters))
    size = "The paper's" if tuple(cfg.filters) == (32, 64, 128) else "Compact"
    amp = ", bf16 autocast" if use_amp(cfg, "cuda" if device.startswith("cuda") else "cpu") else ""
    where = f"on a GPU, {device}{amp}" if device.startswith("cuda") else f"on CPU ({cfg.threads} threads{amp})"
    return (f"{size} {filters} U-Net trained {where} on simulated data only; not the paper's experimental "
            "training set.")


def use_amp(cfg: TrainConfig, device: str) -> bool:
    """bf16 autocast for the forward pass: asked for, and on CUDA or a CPU with native bf16 (AMX /
    AVX512-BF16), where it is faster than fp32; emulated bf16 is slower (docs/design.md, "Training loop")."""
    from ..runner import cpu_has_fast_bf16

    return cfg.amp and (device == "cuda" or cpu_has_fast_bf16())


def _time_limit(cfg: TrainConfig, start: float) -> float:
    """The wall-clock time (epoch seconds) at which training stops: ``hours`` after ``start`` or
    ``deadline``, whichever comes first; infinity without either."""
    ends = [float("inf")]
    if cfg.hours is not None:
        ends.append(start + cfg.hours * 3600)
    if cfg.deadline is not None:
        ends.append(cfg.deadline)
    return min(ends)


def _choose_device(cfg: TrainConfig) -> str:
    """``cpu`` or ``cuda`` through the engine's device chooser (DeviceError when CUDA is asked for and
    absent), with torch using ``cfg.threads`` threads.

    The chooser caps the thread count at the CPUs this process may run on; the trainer keeps the
    count it was given, as the shipped runs did, so the threads are set again afterwards.
    """
    torch.set_num_threads(cfg.threads)
    device = select_device(InferenceConfig(device=cfg.device)).type
    torch.set_num_threads(cfg.threads)
    return device


def _log_to(path: Path) -> logging.Handler:
    """Copy the training log lines to ``path``; returns the handler for :func:`train` to remove."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger(_TRAINING_LOGGER).addHandler(handler)
    return handler


def train(cfg: TrainConfig) -> dict:
    """Train until the time limit / step limit; returns the final state (history, best, step).

    The device is chosen before the run folder is made, so a missing GPU leaves nothing behind.

    Raises:
        DeviceError: CUDA requested but unavailable.
        InputError: no validation cubes in ``cfg.data``.
    """
    device = _choose_device(cfg)
    run_dir = Path(cfg.run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _log_to(run_dir / "train.log")
    try:
        try:
            trainer = Trainer(cfg, device)
        except BaseException:
            if created:  # bad data or options: leave no empty run folder behind
                logging.getLogger(_TRAINING_LOGGER).removeHandler(handler)
                handler.close()
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return trainer.run()
    finally:
        logging.getLogger(_TRAINING_LOGGER).removeHandler(handler)
        handler.close()


class Trainer:
    """One training run in ``cfg.run_dir``: data, model, optimiser, LR schedule and history.

    :meth:`run` repeats epochs of :meth:`step` followed by :meth:`end_epoch` (validation, LR schedule,
    best state), :meth:`checkpoint` and, every ``export_every_min`` minutes, :meth:`export`. The
    construction order (data, then seeding, then the model) fixes the random streams: with the same
    seed and config, in-process batches (``workers`` 0) give bit-identical weights on CPU.
    """

    def __init__(self, cfg: TrainConfig, device: str) -> None:
        from ..model import build_model

        self.cfg, self.device = cfg, device
        self.run_dir = Path(cfg.run_dir)
        self.end = _time_limit(cfg, time.time())
        self.input_key = "x_mask" if cfg.normalization == "mask" else "x_noise"
        self.ds = _cubes(cfg, list_shards(cfg.data, "train"), self.input_key)
        self.vx, self.vy = _validation_set(cfg, self.input_key)
        self.amp = use_amp(cfg, device)
        log.info("%s: %d training cubes, %d validation cubes, device %s%s", cfg.name, len(self.ds), len(self.vx),
                 device, ", bf16 autocast" if self.amp else "")
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)
        self.model = build_model("unet3d", {"filters": list(cfg.filters)}).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, mode="min", factor=0.5,
                                                                patience=cfg.patience)
        self.state: dict = {"step": 0, "epoch": 0, "history": [], "best": {}, "elapsed": 0.0,
                            "config": _jsonable(cfg)}
        self.best_state: dict | None = None
        self.rng = np.random.default_rng(cfg.seed)
        self.resume()
        self.card_device = _device_name(device)
        self._t0, self._elapsed0 = 0.0, 0.0  # set by run(): the clock of this call's training

    @property
    def ckpt(self) -> Path:
        return self.run_dir / "last.ckpt"

    def resume(self) -> None:
        """Continue from the run folder's checkpoint; else start from ``cfg.init`` weights if given."""
        if self.ckpt.exists():
            saved = torch.load(self.ckpt, map_location=self.device, weights_only=False)
            self.model.load_state_dict(saved["model"])
            self.opt.load_state_dict(saved["opt"])
            self.sched.load_state_dict(saved["sched"])
            self.state = saved["state"]
            self.best_state = saved.get("best_model")
            self.rng.bit_generator.state = saved["rng"]
            log.info("resumed from %s at step %d (best val %.5f)", self.ckpt, self.state["step"],
                     self.state["best"].get("val_l1", float("nan")))
        elif self.cfg.init is not None:
            self.model.load_state_dict(torch.load(self.cfg.init, map_location=self.device, weights_only=True))
            log.info("initialised from %s", self.cfg.init)

    def run(self) -> dict:
        """Epochs until the time or step limit, then a last export; returns the state."""
        cfg = self.cfg
        source = _batch_source(self.ds, cfg, self.rng, self.input_key, self.state["step"])
        last_export = time.time()
        self._t0, self._elapsed0 = time.time(), self.state["elapsed"]
        self.model.train()
        try:
            stop = False
            while not stop:
                losses, stop = self.epoch(source)
                self.end_epoch(losses)
                self.checkpoint()
                if time.time() - last_export > cfg.export_every_min * 60:
                    self.export()
                    last_export = time.time()
                if cfg.workers <= 0 and epoch_refresh_due(self.state["epoch"]):
                    self.ds.refresh(list_shards(cfg.data, "train"))
        finally:
            source.close()
        self.export()
        return self.state

    def epoch(self, source) -> tuple[list[float], bool]:
        """Up to ``epoch_steps`` steps; returns their losses and whether a limit was reached."""
        losses = []
        for _ in range(self.cfg.epoch_steps):
            losses.append(self.step(*source.next()))
            if self.limit_reached():
                return losses, True
        return losses, False

    def limit_reached(self) -> bool:
        """Within 30 s of the time limit (room for the last checkpoint and export), or at ``max_steps``."""
        max_steps = self.cfg.max_steps
        return time.time() > self.end - 30 or (max_steps is not None and self.state["step"] >= max_steps)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimisation step on the batch ``(x, y)``; returns its L1 loss."""
        device = self.device
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(x.to(device, non_blocking=True))
        loss = torch.nn.functional.l1_loss(out.float(), y.to(device, non_blocking=True))
        loss.backward()
        self.state["step"] += 1
        if not _finite(loss, self.model):
            # One non-finite update makes every weight NaN for good, and nothing is ever exported again;
            # bf16 autocast on some CPUs gives such a step now and then even on finite data.
            self.state["skipped_steps"] = self.state.get("skipped_steps", 0) + 1
            log.warning("step %d: non-finite loss or gradient, step skipped (%d so far)", self.state["step"],
                        self.state["skipped_steps"])
            return float("nan")
        self.opt.step()
        return loss.item()

    def end_epoch(self, losses: list[float]) -> dict:
        """Validate, step the LR schedule, record the epoch in the history and keep the best state."""
        state = self.state
        state["epoch"] += 1
        metrics = evaluate(self.model, self.vx, self.vy, self.device)
        self.sched.step(metrics["val_l1"])
        state["elapsed"] = self._elapsed0 + time.time() - self._t0
        entry = {"step": state["step"], "epoch": state["epoch"], "train_l1": _mean_finite(losses),
                 "lr": self.opt.param_groups[0]["lr"], "time_h": state["elapsed"] / 3600, **metrics}
        state["history"].append(entry)
        if metrics["val_l1"] < state["best"].get("val_l1", float("inf")):
            state["best"] = {"step": state["step"], **metrics}
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            _torch_save(self.best_state, self.run_dir / "best.pt")
        log.info("epoch %d step %d train %.5f val %.5f noise %.5f lr %.2g (%.0f s)", state["epoch"],
                 state["step"], entry["train_l1"], metrics["val_l1"], metrics["noise_abs"], entry["lr"],
                 state["elapsed"])
        return entry

    def checkpoint(self) -> None:
        """Write ``last.ckpt`` (everything a resume needs), ``history.json`` and ``loss.png``."""
        cfg = self.cfg
        _torch_save({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                     "sched": self.sched.state_dict(), "state": self.state, "best_model": self.best_state,
                     "rng": self.rng.bit_generator.state}, self.ckpt)
        history = json.dumps(self.state["history"], indent=1)
        atomic_write(self.run_dir / "history.json", lambda tmp: Path(tmp).write_text(history))
        title = f"{cfg.name} ({self.device}, filters {cfg.filters}, {cfg.small_crop}/{cfg.crop}^3 cubes)"
        _plot(self.state["history"], self.run_dir / "loss.png", title)

    def export(self) -> None:
        """Write the best weights and their model card to ``cfg.export`` (nothing without either)."""
        cfg = self.cfg
        if cfg.export is None:
            return
        if self.best_state is None:
            log.warning("nothing exported to %s: no validation so far gave a finite loss", cfg.export)
            return
        from ..model import build_model
        from ..weights import save_weights

        net = build_model("unet3d", {"filters": list(cfg.filters)})
        net.load_state_dict(self.best_state)
        pt = save_weights(net, card_fields(cfg, self.state, self.card_device), cfg.export,
                          dtype=torch.float16 if cfg.half_weights else None)
        for f in (pt, pt.with_suffix(".json")):
            os.chmod(f, 0o644)  # weights to ship or share: readable by everyone whatever the umask
        log.info("exported best weights (step %s) to %s", self.state.get("best", {}).get("step"), cfg.export)


def epoch_refresh_due(epoch: int) -> bool:
    """Pick up shards written since the start every few epochs (generation may still run; in-process
    batches only: loader processes keep the shard list they started with)."""
    return epoch % 4 == 0


def _jsonable(cfg: TrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
