"""Pre-generated training crops: simulate, bring to the network's input domain, crop, store as shards.

Each shard ``<structure-stem>__s<seed>.npz`` holds ``n`` cubes (float16, ``[n, C, C, C]``) cut from one
simulated pair after the *same* engine steps as inference:

* ``x_noise``: average of the halves -> :func:`resample.to_working_grid` (1 A/voxel) ->
  :func:`normalize.normalize` in AUTO mode (solvent noise mean 0, std 0.1);
* ``x_mask``: the same map normalised in MASK mode with a binary mask (wide model mask > 0.5);
* ``tightTarget`` / ``wideTarget``: the targets resampled the same way and multiplied by the AUTO
  scale ``0.1 / noise_std`` (no offset, as :func:`normalize.denormalize` undoes it);
* ``mask_ratio`` (per cube): multiply the targets by it to get the MASK-mode scale;
* ``resolution`` (per cube): measured half-map FSC-0.143 of the pair (A).

Cube centres: 80 % on molecule voxels (tight mask > 0.5), 20 % anywhere in the box, so the
solvent and micelle (target 0) are seen too. :class:`CropDataset` reads shards lazily.

That is a ``sim1`` shard (``Job.variety``, the default: the shipped weights' data). A ``sim2`` shard
(:mod:`.variety`) is made as :func:`pipeline.enhance` prepares two half maps, through the same function
(:func:`pipeline.network_input`): the average conditioned at the halves' measured FSC-0.143 with their FSC
curve (default :class:`config.EnhanceConfig`), then resampled and normalised; ``x_mask`` likewise in MASK
mode with the binary wide model mask (for a pair a depositor masked, whose solvent outside that mask is flat:
the AUTO input, ``mask_ratio`` 1). Its targets are resampled the same way and scaled by the same
``0.1 / noise_std``, so a scaled or offset pair gives the same cubes. It also stores each cube's centre
(``centre``, working-grid voxels) and its ``resolution`` is the one the targets are low-passed at. Both
record their ``variety`` in ``meta``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..config import NOISE_TARGET_STD, NormalizationConfig, NormMode
from ..errors import DeepEMhancerError, InputError
from ..fourier import cosine_edge, frequency_grid
from ..io import atomic_write
from .variety import DataVariety, parse_variety

log = logging.getLogger(__name__)

TARGET_KEYS = ("tightTarget", "wideTarget")
INPUT_KEYS = ("x_noise", "x_mask")
STORE_CROP = 48


@dataclass(frozen=True)
class Job:
    """One simulated pair to generate: structure file, seed, output shard, stored cube edge, data version."""

    structure: str
    seed: int
    out: str
    crop: int = STORE_CROP
    variety: str = DataVariety.SIM1.value


def structure_list(list_file: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Paths listed (one per line, relative to ``root`` or the list's folder) in ``list_file``."""
    list_file = Path(list_file)
    base = Path(root) if root is not None else list_file.parent
    try:
        text = list_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise InputError(f"{list_file}: cannot read the structure list ({reason})") from None
    names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not names:
        raise InputError(f"structure list {list_file} is empty")
    return [base / n for n in names]


def stem_of(path: str | os.PathLike[str]) -> str:
    name = Path(path).name
    for suffix in (".gz", ".pdb", ".cif", ".ent", ".mmcif"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def is_validation(stem: str, fraction: float = 0.08) -> bool:
    """Deterministic structure-level validation split (by a hash of the file stem)."""
    h = int(hashlib.sha256(stem.encode()).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


def plan_jobs(structures: Sequence[Path], out_dir: Path, n_per_structure: int, seed_base: int,
              crop: int = STORE_CROP, variety: DataVariety | str = DataVariety.SIM1) -> list[Job]:
    """Round-robin over structures (pass k makes the k-th pair of every structure); cubes of ``crop``^3."""
    kind = parse_variety(variety).value
    jobs = []
    for k in range(n_per_structure):
        for i, s in enumerate(structures):
            seed = seed_base + k * 100_003 + zlib.crc32(stem_of(s).encode()) % 100_000 + i
            jobs.append(Job(str(s), int(seed), str(out_dir / f"{stem_of(s)}__s{seed}.npz"), int(crop), kind))
    return jobs


def shard_variety(data_dir: str | os.PathLike[str]) -> str | None:
    """The data version of the first readable shard in ``data_dir`` (shards without one are sim1), or None."""
    for shard in sorted(p for p in Path(data_dir).glob("*__s*.npz") if ".tmp" not in p.name):
        try:
            with np.load(shard) as z:
                return str(json.loads(str(z["meta"])).get("variety", DataVariety.SIM1.value))
        except (OSError, ValueError, KeyError, zlib.error, EOFError):
            continue
    return None


def _centres(rng, tight: np.ndarray, n: int, crop: int) -> list[tuple[int, int, int]]:
    shape = np.array(tight.shape)
    lo, hi = crop // 2, shape - (crop - crop // 2)
    inside = np.argwhere(tight[lo:hi[0] + 1, lo:hi[1] + 1, lo:hi[2] + 1] > 0.5) + lo
    out = []
    for _ in range(n):
        if len(inside) and rng.random() < 0.8:
            c = inside[rng.integers(len(inside))]
        else:
            c = [rng.integers(lo, h + 1) for h in hi]
        out.append(tuple(int(v) for v in c))
    return out


@dataclass
class Prepared:
    """A pair brought to the network's domain on the working grid: the inputs, the targets (scaled like
    ``x_noise``), the tight mask (cube centres), the noise stds of both normalisations, the resolution stored
    per cube, and what the shard's meta adds."""

    x_noise: np.ndarray
    x_mask: np.ndarray
    targets: dict[str, np.ndarray]
    tight: np.ndarray
    noise_std: float
    mask_noise_std: float
    resolution: float
    meta: dict


def _prepare_sim1(pair, crop: int) -> Prepared:
    """sim1: no conditioning (the shipped weights' data)."""
    from ..normalize import normalize
    from ..resample import to_working_grid

    avg = 0.5 * (pair.half1 + pair.half2)
    x, _ = to_working_grid(avg, pair.voxel_size, 1.0)
    if min(x.shape) < crop:
        raise InputError(f"working box {x.shape} smaller than the crop {crop}")
    tgts = {k: to_working_grid(pair.targets[k], pair.voxel_size, 1.0)[0] for k in TARGET_KEYS}
    tight = np.clip(to_working_grid(pair.tight_mask, pair.voxel_size, 1.0)[0], 0, 1)
    binmask = (to_working_grid(pair.wide_mask, pair.voxel_size, 1.0)[0] > 0.5).astype(np.float32)
    x_noise, info_n = normalize(x, config=NormalizationConfig())
    x_mask, info_m = normalize(
        x, config=NormalizationConfig(mode=NormMode.MASK, mask=Path("simulated-mask")), mask=binmask
    )
    scale = NOISE_TARGET_STD / info_n.std
    return Prepared(x_noise, x_mask, {k: v * scale for k, v in tgts.items()}, tight, info_n.std, info_m.std,
                    pair.fsc0143_resolution, {"working_shape": list(x.shape)})


def prepare_sim2(pair, crop: int = 0) -> Prepared:
    """sim2: as :func:`pipeline.enhance` prepares the halves (see the module docstring)."""
    from dataclasses import replace

    from ..config import EnhanceConfig
    from ..pipeline import half_map_fsc, network_input
    from ..resample import to_working_grid

    vs, config = pair.voxel_size, EnhanceConfig()
    curve = half_map_fsc(pair.half1, pair.half2, vs)
    limit = curve.resolution(0.143)
    avg = np.add(pair.half1, pair.half2, dtype=np.float32)  # as pipeline._read_for_enhance averages
    avg *= 0.5
    x_noise, info_n, _, _ = network_input(avg, vs, config=config, resolution=limit, fsc=curve)
    if min(x_noise.shape) < crop:
        raise InputError(f"working box {x_noise.shape} smaller than the crop {crop}")
    work = config.working_voxel_size
    if pair.input_mask is None:
        masked = replace(config, normalization=NormalizationConfig(mode=NormMode.MASK, mask=Path("simulated-mask")))
        x_mask, info_m, _, _ = network_input(avg, vs, config=masked, resolution=limit, fsc=curve,
                                             mask=(pair.wide_mask > 0.5).astype(np.float32))
    else:  # the depositor's mask left no noise outside the model mask to measure
        x_mask, info_m = x_noise, info_n
    scale = np.float32(config.normalization.target_std / info_n.std)
    tgts = {k: to_working_grid(pair.targets[k], vs, work)[0] * scale for k in TARGET_KEYS}
    tight = np.clip(to_working_grid(pair.tight_mask, vs, work)[0], 0, 1)
    resolution = float(pair.info.get("target_resolution", pair.fsc0143_resolution))
    meta = {"working_shape": list(x_noise.shape), "condition_resolution": limit,
            "condition": config.condition.value, "x_mask": "mask" if pair.input_mask is None else "auto"}
    return Prepared(x_noise, x_mask, tgts, tight, info_n.std, info_m.std, resolution, meta)


def make_crops(structure: str, seed: int, *, crop: int = STORE_CROP, n_crops: int | None = None,
               variety: DataVariety | str = DataVariety.SIM1) -> dict:
    """Simulate one pair and return the crop arrays and metadata of its shard (see module doc)."""
    from .simulate import simulate_pair

    kind = parse_variety(variety)
    pair = simulate_pair(structure, seed, variety=kind)
    prep = _prepare_sim1(pair, crop) if kind is DataVariety.SIM1 else prepare_sim2(pair, crop)
    rng = np.random.default_rng(seed + 7)
    if n_crops is None:
        n_crops = int(np.clip(np.count_nonzero(prep.tight > 0.5) / crop**3 * 3, 4, 16))
    arrays: dict[str, list] = {k: [] for k in INPUT_KEYS + TARGET_KEYS}
    centres = _centres(rng, prep.tight, n_crops, crop)
    for c in centres:
        sl = tuple(slice(ci - crop // 2, ci - crop // 2 + crop) for ci in c)
        arrays["x_noise"].append(prep.x_noise[sl])
        arrays["x_mask"].append(prep.x_mask[sl])
        for k in TARGET_KEYS:
            arrays[k].append(prep.targets[k][sl])
    out = {k: np.stack(v).astype(np.float16) for k, v in arrays.items()}
    meta = dict(pair.info)
    meta.update(fsc0143_resolution=pair.fsc0143_resolution, voxel_size=pair.voxel_size[0],
                noise_std=prep.noise_std, mask_noise_std=prep.mask_noise_std, **prep.meta)
    out["mask_ratio"] = np.full(n_crops, prep.noise_std / prep.mask_noise_std, np.float32)
    out["resolution"] = np.full(n_crops, prep.resolution, np.float32)
    if kind is not DataVariety.SIM1:
        out["centre"] = np.asarray(centres, np.int32)
    out["meta"] = np.array(json.dumps(meta))
    return out


def run_job(job: Job) -> tuple[str, str]:
    """Generate one shard (skips existing ones); returns (shard, status)."""
    if Path(job.out).exists():
        return job.out, "exists"
    try:
        arrays = make_crops(job.structure, job.seed, crop=job.crop, variety=job.variety)
    except (DeepEMhancerError, ValueError, RuntimeError, MemoryError) as exc:
        return job.out, f"skipped: {exc}"

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: given a name, numpy would append ".npz" to it
            np.savez_compressed(fh, **arrays)

    atomic_write(job.out, write)
    return job.out, "ok"


def generate(jobs: Sequence[Job], workers: int = 2, deadline: float | None = None) -> dict[str, int]:
    """Run ``jobs`` in a process pool (deterministic per job, so the order does not matter)."""
    import multiprocessing as mp

    counts: dict[str, int] = {}
    t0 = time.time()
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, maxtasksperchild=50) as pool:
        for i, (out, status) in enumerate(pool.imap(run_job, jobs, chunksize=1)):
            key = status.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
            if key == "skipped":
                log.warning("%s %s", Path(out).name, status)
            if (i + 1) % 20 == 0:
                log.info("%d/%d pairs (%.0f s): %s", i + 1, len(jobs), time.time() - t0, counts)
            if deadline is not None and time.time() > deadline:
                log.warning("deadline reached after %d pairs; stopping", i + 1)
                pool.terminate()
                break
    return counts


def list_shards(data_dir: str | os.PathLike[str], split: str = "train") -> list[Path]:
    """Shards of the train or the validation structures (see :func:`is_validation`)."""
    # ".tmp": half-written shards of older versions (io.atomic_write's temporary names end otherwise)
    shards = sorted(p for p in Path(data_dir).glob("*__s*.npz") if ".tmp" not in p.name)
    want_val = split == "val"
    return [p for p in shards if is_validation(p.name.split("__s")[0]) == want_val]


def stored_edge(data_dir: str | os.PathLike[str]) -> int | None:
    """Edge of the cubes stored in the training shards of ``data_dir`` (None if there are none)."""
    for shard in list_shards(data_dir, "train"):
        try:
            with np.load(shard) as z:
                return int(z["x_noise"].shape[-1])
        except (OSError, ValueError, KeyError, zlib.error, EOFError):
            continue
    return None


def band_limit(cube: np.ndarray, resolution: float, width: float = 0.1) -> np.ndarray:
    """Low-pass a (masked) target cube at ``resolution`` A (1 A voxels; raised-cosine edge from
    (1 - width) / resolution to (1 + width) / resolution), with mirror padding against wrap-around.

    Masking a low-passed map re-creates frequencies beyond the resolution that depend only on the
    mask; a network trained on such targets adds mask-shaped detail that independently processed
    half maps share. Band-limiting the *masked* target removes it.
    """
    pad = 8
    big = np.pad(cube, pad, mode="reflect")
    filt = cosine_edge(frequency_grid(big.shape, 1.0) * resolution, 1 - width, 2 * width).astype(np.float32)
    out = np.fft.irfftn(np.fft.rfftn(big) * filt, big.shape, axes=(0, 1, 2))
    return np.ascontiguousarray(out[pad:-pad, pad:-pad, pad:-pad], dtype=np.float32)


class CropDataset:
    """Random access to the cubes of a set of shards, read lazily (a few shards are cached).

    ``target``: ``tightTarget`` or ``wideTarget``; ``input_key``: ``x_noise`` or ``x_mask`` (then the
    target is scaled by the cube's ``mask_ratio``); ``max_resolution``: keep only pairs whose
    half-map FSC-0.143 is better than this (the highRes subset); ``band_limited``: low-pass each
    target cube at its pair's resolution *after* masking (:func:`band_limit`).
    """

    def __init__(self, shards: Iterable[Path], *, target: str = "tightTarget", input_key: str = "x_noise",
                 max_resolution: float | None = None, cache: int = 64, band_limited: bool = False) -> None:
        if target not in TARGET_KEYS or input_key not in INPUT_KEYS:
            raise InputError(f"unknown target {target!r} or input {input_key!r}")
        self.target, self.input_key, self.max_res = target, input_key, max_resolution
        self.band_limited = band_limited
        self.index: list[tuple[Path, int]] = []
        self._cache: dict[Path, dict] = {}
        self._cache_size = cache
        self.refresh(shards)

    def refresh(self, shards: Iterable[Path]) -> None:
        """(Re)build the cube index from ``shards`` (picks up shards written since)."""
        known = {p for p, _ in self.index}
        for p in shards:
            if p in known:
                continue
            try:
                with np.load(p) as z:
                    res = z["resolution"]
            except (OSError, ValueError, KeyError, zlib.error, EOFError) as exc:
                log.warning("unreadable shard %s: %s", p, exc)
                continue
            self.index.extend((p, i) for i in range(len(res)) if self.max_res is None or res[i] < self.max_res)

    def __len__(self) -> int:
        return len(self.index)

    def _load(self, path: Path) -> dict:
        if path not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            with np.load(path) as z:
                self._cache[path] = {k: z[k] for k in (self.input_key, self.target, "mask_ratio", "resolution")}
        return self._cache[path]

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(input, target) float32 cubes of index ``i``."""
        path, j = self.index[i]
        d = self._load(path)
        y = d[self.target][j].astype(np.float32)
        if self.band_limited:
            y = band_limit(y, max(float(d["resolution"][j]), 2.0))
        if self.input_key == "x_mask":
            y = y * float(d["mask_ratio"][j])
        return d[self.input_key][j].astype(np.float32), y
