"""The null-response correction: the network's mean output for pure noise, measured, kept and removed.

A network trained on finite cubes does not map pure noise to 0 (the targets' solvent): it returns a
small fixed pattern tied to the position inside the cube, which blending turns into a grid of faint
blobs that is the same for every input (docs/design.md, "Null-response correction").
:class:`NullCorrection` measures that pattern, the mean output over :data:`NULL_CUBES` cubes of
Gaussian noise at the normalised noise level (seed :data:`NULL_SEED`; white, or band-limited for maps
resampled from coarser voxels), in the precision and layout the maps run in, keeps it per cube size
and band, and removes it from every cube output before blending (:func:`subtract`).

Measuring costs :data:`NULL_CUBES` extra cubes, so responses are kept where a later run finds them
(:class:`NullStore`). For white noise (inputs at the network's voxel size or finer) the response
depends only on the weights, the cube size, the noise level and the precision, so it is measured once
and shipped beside the weights (``NAME.null.npz``, fp32 and bf16, the CPU precisions). The file records
the SHA-256 of the weights it was made for; a file made for other weights or another noise level is
ignored with a warning. Other responses (fp16 on a GPU, band-limited noise) go to a per-user cache the
first time they are measured.

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
from typing import TYPE_CHECKING, Mapping, Optional, TypeVar

import numpy as np
import numpy.typing as npt
import scipy.fft

from .errors import InputError
from .fourier import axis_frequencies
from .io import atomic_write

if TYPE_CHECKING:
    from .runner import NetworkRunner

log = logging.getLogger(__name__)

#: Per axis (z, y, x) the share of the Nyquist frequency the noise reaches, and optionally a fourth entry:
#: the resolution (voxels) of the conditioning low-pass (:mod:`condition`).
Band = Optional[tuple[float, ...]]
#: The colour of the map's solvent noise (:func:`noise_colour`): per radial frequency bin of
#: :data:`COLOUR_EDGES`, the power over the mean in-band power, log2 in half steps; None: white (or unknown).
Colour = Optional[tuple[int, ...]]
_Out = TypeVar("_Out")

#: Pure-noise cubes averaged for a null response: enough that the estimate's own noise, the same in
#: every output, stays below what the noise test accepts (docs/design.md, "Null-response correction").
NULL_CUBES = 128
#: Seed of those cubes (fixed: the correction, and so the output, is deterministic).
NULL_SEED = 20211
#: Noise cubes averaged for a shipped null response.
SHIPPED_CUBES = 128
#: At most this many noise cubes per forward pass while measuring (the CPU batch), whatever the map's batch.
MEASURE_BATCH = 8
_META = "meta"
#: Radial frequency bins (cycles per voxel of the working grid) of a noise colour: 1/32 wide up to the box's
#: corners (sqrt(3) / 2), so the corners beyond Nyquist on one axis have their own bins.
COLOUR_EDGES = np.arange(29) / 32.0
#: A bin with fewer Fourier coefficients than this (the innermost, on small maps) takes its neighbour's value.
COLOUR_MIN_COEFFICIENTS = 64
#: A colour is measured from at least this share of the map (solvent voxels); less: the band's white noise.
COLOUR_MIN_SOLVENT = 0.1
#: Quantisation of a colour (log2 of power): half steps, so nearby maps share one response, and its range
#: (below 1/256 of the in-band mean the noise holds nothing the network would notice: one value, one key).
COLOUR_STEP, COLOUR_FLOOR, COLOUR_CEIL = 0.5, -8, 8
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
    # float16 keeps ~3 significant digits: rounding errors far below the sampling noise of the estimate
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
    """Where a :class:`NullCorrection` finds null responses it need not measure, and keeps those it measured.

    White noise: the file shipped beside the weights (:func:`load_null_responses`; fp32 and bf16, the CPU
    precisions). Anything else (fp16 on a GPU, another cube size, band-limited noise for inputs with
    voxels coarser than the network's): a per-user cache (:func:`cache_dir`), filled the first time it
    is measured, so later runs skip the :data:`NULL_CUBES` noise cubes.
    Cache entries hold exactly what was measured (float16); their names carry the weights'
    SHA-256, precision, cube size, band, noise level, seed and number of cubes. A cache that cannot be
    written is skipped silently (logged at debug level).
    """

    def __init__(self, pt_path: str | os.PathLike[str], sha256: str, null_std: float,
                 cache: Optional[Path] = None, *, use_cache: bool = True) -> None:
        self.sha256, self.null_std = sha256.lower(), float(null_std)
        self.shipped = load_null_responses(pt_path, sha256, null_std)
        self.cache = (cache if cache is not None else cache_dir()) if use_cache else None

    def _entry(self, tile: int, precision: str, band: Optional[tuple[float, ...]], colour: Colour = None
               ) -> Optional[Path]:
        """Cache file of a response measured as :class:`NullCorrection` does (seed, cube count); band None: white."""
        if self.cache is None:
            return None
        tag = "white" if band is None else "_".join(f"{b:.3f}" for b in band)
        return self.cache / (f"null-{self.sha256[:16]}-{precision}-{int(tile)}-{tag}{colour_tag(colour)}"
                             f"-{self.null_std:g}-s{NULL_SEED}x{NULL_CUBES}.npz")

    def get(self, tile: int, precision: str, band: Optional[tuple[float, ...]] = None, colour: Colour = None
            ) -> tuple[Optional[npt.NDArray[np.float32]], str]:
        """``(response, where it came from)``, or ``(None, "")`` when it must be measured."""
        if band is None and colour is None:
            found = self.shipped.get((int(tile), precision))
            if found is not None:
                return found, "shipped with the weights"
        path = self._entry(tile, precision, band, colour)
        found = _read(path, self.sha256, self.null_std, quiet=True).get(_key(tile, precision)) if path else None
        return (found, f"cached in {path}") if found is not None else (None, "")

    def put(self, tile: int, precision: str, band: Optional[tuple[float, ...]], response: np.ndarray,
            colour: Colour = None) -> None:
        """Cache a response measured by :meth:`NullCorrection.measure` with its defaults (not those the
        shipped file holds)."""
        shipped = band is None and colour is None and (int(tile), precision) in self.shipped
        path = None if shipped else self._entry(tile, precision, band, colour)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, self.sha256, {_key(tile, precision): response}, null_std=self.null_std, seed=NULL_SEED,
                   cubes=NULL_CUBES)
        except OSError as exc:
            log.debug("not caching the null response in %s: %s", path, exc)


def _band_noise(rng: np.random.Generator, n: int, tile: int, band: Band, std: float,
                colour: Colour = None) -> npt.NDArray[np.float32]:
    """``n`` cubes of Gaussian noise with standard deviation ``std``, white or (``band``) with nothing
    beyond ``band[i]`` x Nyquist along axis i (z, y, x: what Fourier resampling to finer voxels leaves) and,
    with a fourth entry ``d`` (voxels), the conditioning low-pass at ``d`` (:func:`condition.response`);
    ``colour`` (:func:`noise_colour`) shapes the power radially."""
    noise = rng.normal(0.0, 1.0, (n, tile, tile, tile))
    if band is not None or colour is not None:
        spec = np.fft.rfftn(noise, axes=(1, 2, 3))
        freqs = axis_frequencies((tile,) * 3, 1.0)
        for f, b in zip(freqs, (band or (1.0, 1.0, 1.0))[:3]):  # cycles per voxel; Nyquist = 0.5
            spec *= (np.abs(f) <= 0.5 * b + 1e-9)[None]
        radius = np.sqrt(sum(f * f for f in freqs))
        if band is not None and len(band) > 3:
            from .condition import response

            spec *= response(radius, band[3])[None]
        if colour is not None:
            spec *= colour_amplitude(colour, radius)[None]
        noise = np.fft.irfftn(spec, s=(tile, tile, tile), axes=(1, 2, 3))
    noise *= std / np.maximum(noise.std(axis=(1, 2, 3), keepdims=True), 1e-12)  # per cube: batch-independent
    return noise.astype(np.float32)


def colour_amplitude(colour: tuple[int, ...], radius: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Amplitude (square root of the power) of a :func:`noise_colour` at radial frequencies ``radius`` (cycles
    per voxel): log2 power interpolated linearly between the bins' centres, constant beyond the outer ones."""
    centres = 0.5 * (COLOUR_EDGES[1:] + COLOUR_EDGES[:-1])
    log2_power = np.interp(np.asarray(radius, np.float64), centres, np.asarray(colour, np.float64) * COLOUR_STEP)
    return np.exp2(0.5 * log2_power)


def noise_colour(norm: npt.NDArray[np.float32], band: Band = None) -> Colour:
    """The radial power spectrum of a normalised map's solvent noise on the working grid, as a null
    response is measured with it: per bin of :data:`COLOUR_EDGES`, log2 of the power over the mean power of
    the bins inside the band, in :data:`COLOUR_STEP` steps. Only Fourier coefficients inside ``band``'s box
    (``|f_i| <= 0.5 band_i``, what :func:`_band_noise` keeps) are averaged; bins with none there, or too few
    (:data:`COLOUR_MIN_COEFFICIENTS`: the innermost on small maps), take their neighbour's value. None when the
    noise is white (every bin wholly inside the band rounds to the mean: the band's white noise is what the map
    holds), when the solvent is under :data:`COLOUR_MIN_SOLVENT` of the map or flat (masked).

    The solvent (:func:`normalize.solvent_voxels`) is weighted by a smooth window (the mask blurred by 2
    voxels) before the Fourier transform, so that its edges do not spread power across frequencies.
    """
    from scipy import ndimage

    from .normalize import solvent_voxels

    data = np.asarray(norm, np.float32)
    if data.ndim != 3 or min(data.shape) < 8:
        return None
    solvent = solvent_voxels(data)
    if np.count_nonzero(solvent) < COLOUR_MIN_SOLVENT * data.size:
        return None
    mean = float(np.mean(data, where=solvent, dtype=np.float64))
    if not float(np.std(data, where=solvent, dtype=np.float64)) > 0:
        return None
    centred = ndimage.gaussian_filter(solvent.astype(np.float32), 2.0, mode="wrap", output=np.float32)
    del solvent
    centred *= data - np.float32(mean)  # the window times the solvent-centred map; one temporary
    spec = scipy.fft.rfftn(centred, workers=-1)  # complex64 for float32 input
    del centred
    return _colour_of(spec, data.shape, band)


def _colour_of(spec: np.ndarray, shape: tuple[int, ...], band: Band) -> Colour:
    """:func:`noise_colour` from the ``rfftn`` of the windowed solvent, one plane at a time (no volume-sized
    frequency arrays)."""
    bins = len(COLOUR_EDGES) - 1
    sums, counts = np.zeros(bins), np.zeros(bins, np.int64)
    limits = [0.5 * b + 1e-9 for b in (band or (1.0, 1.0, 1.0))[:3]]
    fz, fy, fx = (np.ravel(f) for f in axis_frequencies(shape, 1.0))
    in_plane = (np.abs(fy)[:, None] <= limits[1]) & (np.abs(fx)[None, :] <= limits[2])
    plane_r2 = fy[:, None] ** 2 + fx[None, :] ** 2
    for k, f in enumerate(fz):
        if abs(f) > limits[0]:
            continue
        radius = np.sqrt(plane_r2 + f * f)
        which = np.clip(np.digitize(radius, COLOUR_EDGES) - 1, 0, bins - 1)
        which[(radius == 0) | ~in_plane] = bins  # the mean is not noise; outside the band nothing is kept
        power = (np.abs(spec[k]) ** 2).astype(np.float64)
        sums += np.bincount(which.ravel(), power.ravel(), minlength=bins + 1)[:bins]
        counts += np.bincount(which.ravel(), minlength=bins + 1)[:bins]
    valid = counts >= COLOUR_MIN_COEFFICIENTS
    if not valid.any():
        return None
    level = sums / np.maximum(counts, 1)
    inside = valid & (COLOUR_EDGES[1:] <= min(limits) + 1e-9)  # bins wholly inside the band: the reference
    reference = level[inside].mean() if inside.any() else level[valid].mean()
    if not reference > 0:
        return None
    log2 = np.log2(np.maximum(level / reference, 2.0 ** COLOUR_FLOOR))
    index = np.flatnonzero(valid)
    nearest = index[np.abs(np.arange(bins)[:, None] - index[None, :]).argmin(axis=1)]
    log2 = log2[nearest]  # bins with too few coefficients, or none in the band: their nearest valid bin's
    steps = np.clip(np.round(log2 / COLOUR_STEP), COLOUR_FLOOR / COLOUR_STEP, COLOUR_CEIL / COLOUR_STEP)
    if not np.any(steps[inside if inside.any() else valid]):
        return None  # white inside the band: the band's own white noise (its corners as resampling leaves them)
    return tuple(int(q) for q in steps)


def colour_tag(colour: Colour) -> str:
    """A colour as a short file-name tag (``""`` for white)."""
    return "" if colour is None else "-c" + ".".join(str(q) for q in colour)


def band_key(band: Optional[tuple[float, ...]]) -> Band:
    """The band a response is measured and kept for: None (white) when it reaches Nyquist on every axis and
    has no conditioning low-pass (a fourth entry, in voxels: :func:`condition.response`), else the axes
    rounded to 3 decimals so that nearly equal voxel sizes share a response, and the low-pass to 0.1 voxel so
    that maps of nearly the same resolution do (each new one costs :data:`NULL_CUBES` cubes once).

    Example:
        >>> band_key((1.0, 1.0, 1.2)), band_key((1.0, 0.52341, 0.5)), band_key((1, 1, 1, 4.12345))
        (None, (1.0, 0.523, 0.5), (1.0, 1.0, 1.0, 4.1))
    """
    if band is None or (min(band[:3]) >= 1 and len(band) == 3):
        return None
    return tuple(round(float(b), 3 if i < 3 else 1) for i, b in enumerate(band))  # type: ignore[return-value]


def subtract(outputs: _Out, response: object) -> _Out:
    """Remove a null response from a batch of cube outputs ``[B, T, T, T]`` in place and return them
    (numpy arrays, or torch tensors with the response on the same device)."""
    outputs -= response  # type: ignore[operator]
    return outputs


class NullCorrection:
    """The null responses of one network run by one :class:`~runner.NetworkRunner`, per cube size and band.

    Args:
        runner: the runner the maps go through: responses are measured in its precision and layout.
        std: standard deviation of the noise (the normalised noise level, 0.1); positive.
        store: where responses are looked up before measuring and kept after (a :class:`NullStore`, or
            anything with its ``get(tile, precision, band, colour)`` and ``put(tile, precision, band, response,
            colour)``);
            None: measure.

    Example:
        >>> import torch
        >>> from deepemhancer_engine.runner import NetworkRunner
        >>> null = NullCorrection(NetworkRunner(torch.nn.Identity(), "cpu", amp="off"), 0.1)
        >>> float(abs(null.response(8)).max()) < 0.05  # identity: the mean of the noise cubes
        True
    """

    def __init__(self, runner: NetworkRunner, std: float, store: Optional[NullStore] = None) -> None:
        if not std > 0:
            raise InputError(f"null-response noise level must be positive, got {std!r}")
        self.runner = runner
        self.std = float(std)
        self.store = store
        self._responses: dict[tuple[int, Band, Colour], npt.NDArray[np.float32]] = {}

    def measure(self, tile: int, band: Band = None, cubes: int = NULL_CUBES, colour: Colour = None
                ) -> npt.NDArray[np.float32]:
        """Mean ``(tile, tile, tile)`` output over ``cubes`` noise cubes of std :attr:`std` (seed
        :data:`NULL_SEED`); not kept (see :meth:`response`). The first cubes are the same for any ``cubes``.
        """
        import torch

        if int(cubes) < 1:
            raise InputError(f"the null response needs at least 1 noise cube, got {cubes}")
        rng = np.random.default_rng(NULL_SEED)
        step = max(1, min(self.runner.resolve_batch_size(tile), MEASURE_BATCH))
        total = np.zeros((tile, tile, tile), np.float64)
        with torch.inference_mode():
            for done in range(0, cubes, step):
                noise = _band_noise(rng, min(step, cubes - done), tile, band, self.std, colour)
                total += self.runner.forward(noise).sum(axis=0, dtype=np.float64)
        return (total / cubes).astype(np.float32)

    def response(self, tile: int, band: Optional[tuple[float, ...]] = None, colour: Colour = None
                 ) -> npt.NDArray[np.float32]:
        """The ``(tile, tile, tile)`` mean output for pure-noise cubes.

        ``band``: per axis ``(z, y, x)``, the share of the Nyquist frequency the noise reaches (a map
        resampled from coarser voxels holds nothing beyond ``voxel / input voxel``); None = white
        (:func:`band_key`). ``colour``: the radial shape of the noise's power (:func:`noise_colour`; None:
        flat). Found in the store: used as it is; else measured on :data:`NULL_CUBES` cubes and handed to
        the store. Either way kept here, so each cube size, band and colour costs at most once.
        """
        band = band_key(band)
        key = (int(tile), band, colour)
        if key not in self._responses:
            precision = self.runner.precision
            label = (f" (band {band})" if band else "") + (" (coloured noise)" if colour is not None else "")
            known, where = self.store.get(tile, precision, band, colour) if self.store else (None, "")
            if known is not None and known.shape == (tile,) * 3:
                self._responses[key] = np.asarray(known, np.float32)
                log.info("Null response of the network for %d^3 cubes%s in %s: %s", tile, label, precision, where)
            else:
                t0 = time.perf_counter()
                self._responses[key] = null = self.measure(tile, band, colour=colour)
                log.info("Null response of the network measured on %d noise cubes of %d^3%s in %.1f s (rms %.3g)",
                         NULL_CUBES, tile, label, time.perf_counter() - t0,
                         float(np.sqrt(np.mean(null.astype(np.float64) ** 2))))
                if self.store:
                    self.store.put(tile, precision, band, null, colour)
        return self._responses[key]


def measure(pt_path: str | os.PathLike[str], *, cubes: int = SHIPPED_CUBES, null_std: float = 0.1,
            precisions: tuple[str, ...] | None = None) -> Path:
    """Measure the white-noise null response of a weights file on CPU and write its ``.null.npz``."""
    from .config import ModelName
    from .runner import NetworkRunner, cpu_has_fast_bf16
    from .weights import load_model

    pt_path = Path(pt_path)
    if precisions is None:
        precisions = ("float32", "bfloat16") if cpu_has_fast_bf16() else ("float32",)
    responses = {}
    card = None
    for precision in precisions:
        model, card = load_model(ModelName.TIGHT, pt_path)  # an explicit file: the name is not used
        amp = {"float32": False, "bfloat16": "bf16"}[precision]
        runner = NetworkRunner(model, "cpu", amp=amp)
        t0 = time.perf_counter()
        responses[(card.tile, runner.precision)] = NullCorrection(runner, null_std).measure(card.tile, cubes=cubes)
        log.info("%s %s: %d cubes in %.0f s", pt_path.name, precision, cubes, time.perf_counter() - t0)
    assert card is not None
    return save_null_responses(pt_path, card.sha256, responses, null_std=null_std, seed=NULL_SEED, cubes=cubes)



if __name__ == "__main__":  # the former module entry point: say where it went
    import sys

    print("error: use 'deepemhancer null-response NAME.pt' (python -m deepemhancer_engine null-response NAME.pt)",
          file=sys.stderr)
    raise SystemExit(2)
