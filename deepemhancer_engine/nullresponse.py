"""Null responses measured once and shipped beside the weights (``NAME.null.npz``).

The null response (:meth:`inference.Predictor.null_response`, docs/design.md "Null-response
correction") is the network's mean output over cubes of pure noise at the normalised noise level.
Measured at run time it costs 32 extra cubes per run (~5 s on two CPU cores). For white noise (inputs
at 1 A/voxel or finer) it depends only on the weights, the cube size, the noise level and the precision
the network computes in, so it is measured once, on more cubes, and shipped. The file records the
SHA-256 of the weights it was made for; a file made for other weights or another noise level is
ignored with a warning and the response is measured at run time, as it is for precisions the file
does not hold (fp16 on a GPU) and for band-limited noise (inputs with voxels coarser than 1 A).

Make or refresh the file of a weights file (both CPU precisions where the CPU has native bf16)::

    deepemhancer null-response deepemhancer_engine/weights/tightTarget.pt --cubes 128
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import numpy.typing as npt

from .io import atomic_write

log = logging.getLogger(__name__)

#: Noise cubes averaged for a shipped null response (the run-time measurement uses inference.NULL_CUBES).
SHIPPED_CUBES = 128
_META = "meta"
#: Environment variable naming the cache folder of band-limited null responses ("" or "off": no cache).
CACHE_ENV = "DEEPEMHANCER_CACHE"


def null_path(pt_path: str | os.PathLike[str]) -> Path:
    """``NAME.null.npz`` beside ``NAME.pt``."""
    return Path(pt_path).with_suffix(".null.npz")


def _key(tile: int, precision: str) -> str:
    return f"{precision}_{int(tile)}"


def _write(path: Path, sha256: str, arrays: Mapping[str, np.ndarray], *, null_std: float, seed: int,
           cubes: int) -> Path:
    meta = {"weights_sha256": sha256.lower(), "null_std": float(null_std), "seed": int(seed), "cubes": int(cubes),
            "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    # float16 keeps ~3 significant digits of values ~0.004: errors ~1e-6, far below the 32-cube sampling noise
    stored = {name: np.asarray(a, np.float16) for name, a in arrays.items()}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **stored, **{_META: np.array(json.dumps(meta))})

    atomic_write(path, write)
    return path


def _read(path: Path, sha256: str, null_std: float, *, quiet: bool = False) -> dict[str, npt.NDArray[np.float32]]:
    """The arrays of a null-response file made for these weights and noise level, else ``{}``."""
    warn = log.debug if quiet else log.warning
    try:
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data[_META]))
            if str(meta.get("weights_sha256", "")).lower() != sha256.lower():
                warn("%s was made for other weights (SHA-256 %.12s..., these are %.12s...); measuring "
                     "the null response at run time", path, meta.get("weights_sha256", "?"), sha256)
                return {}
            if not abs(float(meta.get("null_std", -1.0)) - null_std) <= 1e-9:
                warn("%s was made for noise level %s, not %s; measuring the null response at run time",
                     path, meta.get("null_std"), null_std)
                return {}
            return {name: np.asarray(data[name], np.float32) for name in data.files if name != _META}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warn("cannot read %s (%s); measuring the null response at run time", path, exc)
        return {}


def save_null_responses(pt_path: str | os.PathLike[str], sha256: str, responses: Mapping[tuple[int, str], np.ndarray],
                        *, null_std: float, seed: int, cubes: int) -> Path:
    """Write ``{(tile, precision): (tile,)*3 array}`` for the weights with this SHA-256 (atomic)."""
    arrays = {_key(t, p): a for (t, p), a in responses.items()}
    return _write(null_path(pt_path), sha256, arrays, null_std=null_std, seed=seed, cubes=cubes)


def load_null_responses(pt_path: str | os.PathLike[str], sha256: str, null_std: float
                        ) -> dict[tuple[int, str], npt.NDArray[np.float32]]:
    """The responses shipped for these weights and noise level; ``{}`` (with a warning) if none fit."""
    out = {}
    for name, array in _read(null_path(pt_path), sha256, null_std).items():
        precision, tile = name.rsplit("_", 1)
        out[(int(tile), precision)] = array
    return out


def cache_dir() -> Optional[Path]:
    """Folder of the per-user cache of band-limited null responses, or None when caching is off.

    ``$DEEPEMHANCER_CACHE`` (empty or ``off``: no cache), else ``$XDG_CACHE_HOME/deepemhancer``, else
    ``~/.cache/deepemhancer``.
    """
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "none", "0") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deepemhancer"


class NullStore:
    """Where a predictor finds null responses it need not measure (``Predictor.null_store``).

    White noise: the file shipped beside the weights (:func:`load_null_responses`; fp32 and bf16, the CPU
    precisions). Anything else (fp16 on a GPU, another cube size, band-limited noise for inputs with
    voxels coarser than the network's): a per-user cache (:func:`cache_dir`), filled the first time it
    is measured, so later runs skip the :data:`inference.NULL_CUBES` noise cubes.
    Cache entries hold exactly what the predictor measured (float16); their names carry the weights'
    SHA-256, precision, cube size, band, noise level, seed and number of cubes. A cache that cannot be
    written is skipped silently (logged at debug level).
    """

    def __init__(self, pt_path: str | os.PathLike[str], sha256: str, null_std: float,
                 cache: Optional[Path] = None, *, use_cache: bool = True) -> None:
        self.sha256, self.null_std = sha256.lower(), float(null_std)
        self.shipped = load_null_responses(pt_path, sha256, null_std)
        self.cache = (cache if cache is not None else cache_dir()) if use_cache else None

    def _entry(self, tile: int, precision: str, band: Optional[tuple[float, ...]]) -> Optional[Path]:
        """Cache file of a response measured as the predictor does (seed, cube count); band None: white."""
        from .inference import NULL_CUBES, NULL_SEED

        if self.cache is None:
            return None
        tag = "white" if band is None else "_".join(f"{b:.3f}" for b in band)
        return self.cache / (f"null-{self.sha256[:16]}-{precision}-{int(tile)}-{tag}-{self.null_std:g}"
                             f"-s{NULL_SEED}x{NULL_CUBES}.npz")

    def get(self, tile: int, precision: str, band: Optional[tuple[float, ...]] = None
            ) -> tuple[Optional[npt.NDArray[np.float32]], str]:
        """``(response, where it came from)``, or ``(None, "")`` when it must be measured."""
        if band is None:
            found = self.shipped.get((int(tile), precision))
            if found is not None:
                return found, "shipped with the weights"
        path = self._entry(tile, precision, band)
        found = _read(path, self.sha256, self.null_std, quiet=True).get(_key(tile, precision)) if path else None
        return (found, f"cached in {path}") if found is not None else (None, "")

    def put(self, tile: int, precision: str, band: Optional[tuple[float, ...]], response: np.ndarray) -> None:
        """Cache a response measured by :meth:`Predictor.measure_null` with its defaults (not those the
        shipped file holds)."""
        from .inference import NULL_CUBES, NULL_SEED

        shipped = band is None and (int(tile), precision) in self.shipped
        path = None if shipped else self._entry(tile, precision, band)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, self.sha256, {_key(tile, precision): response}, null_std=self.null_std, seed=NULL_SEED,
                   cubes=NULL_CUBES)
        except OSError as exc:
            log.debug("not caching the null response in %s: %s", path, exc)


def measure(pt_path: str | os.PathLike[str], *, cubes: int = SHIPPED_CUBES, null_std: float = 0.1,
            precisions: tuple[str, ...] | None = None) -> Path:
    """Measure the white-noise null response of a weights file on CPU and write its ``.null.npz``."""
    import torch

    from . import inference, runner
    from .config import ModelName
    from .weights import load_model

    pt_path = Path(pt_path)
    if precisions is None:
        precisions = ("float32", "bfloat16") if runner.cpu_has_fast_bf16() else ("float32",)
    responses = {}
    card = None
    for precision in precisions:
        model, card = load_model(ModelName.TIGHT, pt_path)  # an explicit file: the name is not used
        amp = {"float32": False, "bfloat16": "bf16"}[precision]
        pred = inference.Predictor(model, torch.device("cpu"), amp=amp, null_std=null_std)
        t0 = time.perf_counter()
        responses[(card.tile, pred.precision)] = pred.measure_null(card.tile, cubes=cubes)
        log.info("%s %s: %d cubes in %.0f s", pt_path.name, precision, cubes, time.perf_counter() - t0)
    assert card is not None
    return save_null_responses(pt_path, card.sha256, responses, null_std=null_std,
                               seed=inference.NULL_SEED, cubes=cubes)

