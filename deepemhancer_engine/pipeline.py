"""The enhancement pipeline of the paper, as one library call.

average halves -> resample to the model's voxel size (1 A) -> normalise noise (mean 0, std 0.1)
-> 64^3 cubes through the network with overlap blending -> scale back -> resample back -> optional
cleaning. Every geometry change is undone in reverse order, so the output has exactly the input's
shape, voxel size and origin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .config import ConditionMode, EnhanceConfig, ModelName, NormMode, TilingConfig
from .errors import DeviceError, InputError
from .fourier import as_xyz
from .io import GridInfo, check_same_grid, memory_limit, read_map, write_map

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclasses.dataclass
class LoadedModel:
    """A network ready to run on whole maps, with the model card it was built from.

    ``runner`` (:class:`runner.NetworkRunner`) runs the network; ``null``
    (:class:`nullresponse.NullCorrection`, None when the correction is off) removes its response to pure
    noise. After :meth:`predict`, ``timings`` holds the seconds in the network (``network``), in cutting
    and blending (``blend``) and in the whole call (``predict``), and the cubes run and skipped
    (``cubes``, ``skipped``).
    """

    runner: object  # runner.NetworkRunner
    card: object  # weights.ModelCard
    weights_path: Path
    null: object | None = None  # nullresponse.NullCorrection
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def predict(self, array: np.ndarray, tiling: TilingConfig, *, progress: Progress | None = None,
                mask: np.ndarray | None = None, null_band: tuple[float, ...] | None = None,
                null_colour: tuple[int, ...] | None = None, solvent_std: float | None = None) -> np.ndarray:
        """Run a normalised map through the network cube by cube (:func:`inference.predict_volume`; ``mask``
        and ``solvent_std`` say which cubes may be skipped; ``null_band`` and ``null_colour`` the noise the
        null response is measured with)."""
        from .inference import predict_volume

        result, self.timings = predict_volume(array, tiling, self.runner, null=self.null,  # type: ignore[arg-type]
                                              null_band=null_band, null_colour=null_colour, mask=mask,
                                              solvent_std=solvent_std, progress=progress)
        return result


def model_for(config: EnhanceConfig) -> ModelName:
    """The registry model a configuration asks for (mask normalisation has its own model)."""
    if config.normalization.mode is NormMode.MASK and config.weights is None:
        return ModelName.MASKED
    return config.model


def load(config: EnhanceConfig) -> LoadedModel:
    """Resolve, verify and load the weights, and put the network on the chosen device in the chosen
    precision and layout, with the null-response correction unless it is off."""
    from .nullresponse import NullCorrection, NullStore
    from .runner import NetworkRunner, select_device
    from .weights import load_model, resolve_weights

    name = model_for(config)
    pt_path, _ = resolve_weights(name, config.weights)
    model, card = load_model(name, config.weights)
    device = select_device(config.inference)
    model = model.to(device)
    log.info("Model %s (%s, %s) on %s", card.name, card.arch, pt_path.name, device)
    inference = config.inference
    runner = NetworkRunner(model, device, batch_size=inference.batch_size, amp=inference.amp,
                           channels_last=inference.channels_last)
    null = None
    if inference.null_correction:
        null_std = config.normalization.target_std
        null = NullCorrection(runner, null_std, store=NullStore(pt_path, card.sha256, null_std))
    return LoadedModel(runner=runner, card=card, weights_path=pt_path, null=null)


def working_voxel_size(model: LoadedModel, config: EnhanceConfig) -> float:
    """The voxel size (A) the network runs at: its model card's, else ``config.working_voxel_size``."""
    return float(getattr(model.card, "voxel_size", None) or config.working_voxel_size)


def _model_tile(card: object, default: int) -> int:
    tile = getattr(card, "tile", None)
    return int(tile) if tile else default


def enhance(
    volume: np.ndarray,
    voxel_size: float | Sequence[float],
    *,
    config: EnhanceConfig | None = None,
    mask: np.ndarray | None = None,
    model: LoadedModel | None = None,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
    resolution: float | None = None,
    fsc=None,
) -> np.ndarray:
    """Enhance one map (``[z, y, x]`` float32) and return a map of the same shape.

    ``voxel_size`` is in A (one number or ``(x, y, z)``). ``model`` is reused when given (load it once
    with :func:`load` to enhance several maps); otherwise the weights named by ``config`` are loaded.
    ``timings``, when given, receives the seconds spent per stage (resample, normalise, network, ...).
    ``resolution`` (A; default ``config.resolution``): the network sees the map conditioned at it
    (``config.condition``, :func:`condition.condition`; ``fsc``: the half maps' FSC curve for FSC weighting)
    and its output is kept up to it, the input's data beyond (:func:`postprocess.limit_resolution`, inside
    the molecule's envelope with ``config.solvent_envelope``); then, with ``config.match_amplitudes``, each
    Fourier shell gets the power of the classical map (:func:`metrics.sharpen_average` of ``volume``, FSC-weighted
    by ``fsc`` when given) inside the envelope, which also damps the data beyond the limit
    (:func:`postprocess.match_amplitudes`). The limit is off with ``config.limit_resolution`` False.
    """
    from .normalize import denormalize
    from .resample import from_working_grid

    config = config or EnhanceConfig()
    model = model or load(config)
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(f"a 3D map is needed, got an array of shape {volume.shape}")
    vs = as_xyz(voxel_size)
    target_vs = working_voxel_size(model, config)
    check_working_grid(volume.shape, vs, target_vs)
    clock = _StageClock(timings)
    limit = resolution if resolution is not None else config.resolution
    norm, ninfo, rinfo, work_mask = _network_input(volume, vs, config, mask, target_vs, limit, fsc, clock)
    envelope = _molecule_envelope(norm, config, limit, rinfo, clock)
    pred = _run_network(model, norm, config, vs, target_vs, work_mask, progress, clock, limit)
    del norm
    with clock("resample_back"):
        pred = denormalize(pred, ninfo, config.normalization.target_std, in_place=True)
        out = from_working_grid(pred, rinfo)
        del pred
    out = _postprocess(out, volume, vs, config, limit, clock, envelope, fsc)
    return np.ascontiguousarray(out, dtype=np.float32)


def network_input(volume: np.ndarray, voxel_size: float | Sequence[float], *, config: EnhanceConfig,
                  resolution: float | None = None, fsc=None, mask: np.ndarray | None = None,
                  working_voxel_size: float | None = None):
    """What :func:`enhance` feeds the network for ``volume``: conditioned at ``resolution`` (with the half maps'
    ``fsc`` curve for FSC weighting), on the working grid (``working_voxel_size``, default
    ``config.working_voxel_size``: a model card may set another), normalised by ``config.normalization``
    (``mask`` on the input grid for MASK mode). ``(normalised map, NormInfo, ResampleInfo, working-grid mask
    or None)``; the training shards (``training/dataset.py``) are made with it, so they see what inference does."""
    target_vs = float(working_voxel_size or config.working_voxel_size)
    return _network_input(np.asarray(volume, dtype=np.float32), as_xyz(voxel_size), config, mask, target_vs,
                          resolution, fsc, _StageClock(None))


def _network_input(volume: np.ndarray, vs: tuple[float, float, float], config: EnhanceConfig,
                   mask: np.ndarray | None, target_vs: float, limit: float | None, fsc, clock: _StageClock):
    """What the network sees: the map conditioned at ``limit`` (:func:`condition.condition`), on the working
    grid, normalised: ``(normalised map, NormInfo, ResampleInfo, working-grid mask or None)``."""
    from .condition import condition
    from .normalize import normalize

    with clock("condition"):
        seen = condition(volume, vs, config.condition, limit, fsc)
    work, rinfo, work_mask = _to_working_grid(seen, vs, mask, target_vs, clock)
    del seen
    with clock("normalise"):
        norm, ninfo = normalize(work, config=config.normalization, mask=work_mask, in_place=True)  # work is ours
        del work
    log.info("Normalised (%s): noise mean %.4g, std %.4g -> mean 0, std %.3g", config.normalization.mode,
             ninfo.mean, ninfo.std, config.normalization.target_std)
    return norm, ninfo, rinfo, work_mask


def data_envelope(volume: np.ndarray, voxel_size: float | Sequence[float], *, config: EnhanceConfig,
                  model: LoadedModel, resolution: float | None = None, fsc=None,
                  mask: np.ndarray | None = None) -> np.ndarray | None:
    """The envelope (0..1, the map's grid) inside which :func:`enhance` with the same arguments puts the data
    beyond the resolution back; None where it puts them back everywhere (no limit, no envelope, no molecule).
    The network is not run (``evaluate`` compares the raw halves inside it)."""
    vs = as_xyz(voxel_size)
    volume = np.asarray(volume, dtype=np.float32)
    limit = resolution if resolution is not None else config.resolution
    if not (config.solvent_envelope and config.limit_resolution and limit is not None):
        return None
    clock = _StageClock(None)
    norm, _, rinfo, _ = _network_input(volume, vs, config, mask, working_voxel_size(model, config), limit, fsc,
                                       clock)
    return _data_envelope(norm, config, limit, rinfo, clock)


def _data_envelope(norm: np.ndarray, config: EnhanceConfig, limit: float | None, rinfo, clock: _StageClock
                   ) -> np.ndarray | None:
    """Where the resolution limit puts the data back (:func:`normalize.molecule_envelope` of the normalised
    map, back on the input grid); None when the data come back everywhere."""
    if not config.solvent_envelope:
        return None
    return _molecule_envelope(norm, config, limit, rinfo, clock)


def _molecule_envelope(norm: np.ndarray, config: EnhanceConfig, limit: float | None, rinfo, clock: _StageClock
                       ) -> np.ndarray | None:
    """The molecule's soft envelope on the input grid, when a resolution limit applies and something uses it:
    the limit's data beyond ``d`` (``config.solvent_envelope``) or the shell amplitudes, always measured inside
    it (``config.match_amplitudes``); None otherwise or when no molecule is found."""
    from .normalize import molecule_envelope
    from .resample import from_working_grid

    if not (config.limit_resolution and limit is not None and (config.solvent_envelope or config.match_amplitudes)):
        return None
    with clock("envelope"):
        env = molecule_envelope(norm, config.normalization.target_std)
        if env is None:
            log.info("No molecule found: the data beyond the resolution come back over the whole box")
            return None
        env = from_working_grid(env, rinfo)
        return np.clip(env, 0.0, 1.0, out=env)


def _to_working_grid(volume: np.ndarray, vs: tuple[float, float, float], mask: np.ndarray | None,
                     target_vs: float, clock: _StageClock):
    """The map (and mask, clipped to 0..1) resampled to the network's voxel size; ``(map, info, mask)``."""
    from .resample import to_working_grid

    with clock("resample"):
        work, rinfo = to_working_grid(volume, vs, target=target_vs)
        work_mask = None
        if mask is not None:
            work_mask, _ = to_working_grid(np.asarray(mask, dtype=np.float32), vs, target=target_vs)
            work_mask = np.clip(work_mask, 0.0, 1.0)
    log.info("Resampled %s at %s A/voxel to %s at %.3g A/voxel", _fmt_shape(volume.shape), _fmt_vs(vs),
             _fmt_shape(work.shape), target_vs)
    return work, rinfo, work_mask


def _run_network(model: LoadedModel, norm: np.ndarray, config: EnhanceConfig, vs: tuple[float, float, float],
                 target_vs: float, work_mask: np.ndarray | None, progress: Progress | None,
                 clock: _StageClock, limit: float | None = None) -> np.ndarray:
    """The normalised map through the network in cubes (the model card's cube size), blended; with
    ``config.inference.skip_solvent`` the cubes outside the mask, or without one those with no molecule
    near, are not run. The null response is measured on noise with the map's band (what resampling leaves)
    and, for a map conditioned at ``limit``, the conditioning low-pass; an unconditioned map's noise can have
    any colour (rising, rolled off), so there it is measured (:func:`nullresponse.noise_colour`)."""
    from .nullresponse import noise_colour

    tiling = scaled_tiling(config.tiling, _model_tile(model.card, config.tiling.tile))
    skip = config.inference.skip_solvent
    band: tuple[float, ...] = tuple(min(1.0, target_vs / v) for v in (vs[2], vs[1], vs[0]))  # after resampling
    colour = None
    if limit is not None and config.condition is not ConditionMode.NONE:
        band = (*band, float(limit) / target_vs)  # the conditioning low-pass, in working voxels
    elif model.null is not None:
        with clock("noise_colour"):
            colour = noise_colour(norm, band)
    with clock("network"):
        pred = model.predict(norm, tiling, progress=progress, mask=work_mask if skip else None, null_band=band,
                             null_colour=colour, solvent_std=config.normalization.target_std if skip else None)
    log.info("Network and blending done in %.1f s", clock.last)
    return pred


def _postprocess(out: np.ndarray, volume: np.ndarray, vs: tuple[float, float, float], config: EnhanceConfig,
                 limit: float | None, clock: _StageClock, envelope: np.ndarray | None = None, fsc=None
                 ) -> np.ndarray:
    """The resolution limit (the input's data beyond it, inside ``envelope`` when given), the classical map's
    shell amplitudes (``config.match_amplitudes``; ``fsc``: the half maps' curve, for its FSC weighting) and the
    optional cleaning of small blobs."""
    from .metrics import sharpen_average
    from .postprocess import clean_small_blobs, limit_resolution, match_amplitudes

    if config.limit_resolution and limit is not None:
        with clock("limit"):
            out, _ = limit_resolution(out, volume, vs, float(limit),
                                      envelope=envelope if config.solvent_envelope else None)
        if config.match_amplitudes:
            with clock("amplitudes"):
                reference, _ = sharpen_average(volume, vs, float(limit), fsc)
                # no cut beyond d: the envelope's product keeps some power there in the reference, so the data
                # beyond the limit come back damped (train split: the cut costs 0.55 A of masked FSC-0.5 for
                # +0.001 CC_mask; docs/design.md, "Shell amplitudes")
                out, _ = match_amplitudes(out, reference, vs, weight=envelope)
                del reference
    elif config.limit_resolution:
        log.info("No resolution limit (a single map and no --resolution): the output keeps all the network adds")
    if config.cleaning_strength is not None and config.cleaning_strength > 0:
        with clock("clean"):
            out = clean_small_blobs(out, config.cleaning_strength)
    return out


def scaled_tiling(tiling: TilingConfig, tile: int) -> TilingConfig:
    """The tiling for a model whose cubes are ``tile`` voxels: the stride keeps its share of the cube.

    Strides are given for the paper's 64^3 cubes (``--stride 16`` = a quarter of a cube); a model card
    with another cube size gets the same overlap fraction.
    """
    if tile == tiling.tile:
        return tiling
    stride = max(1, min(tile, round(tiling.stride * tile / tiling.tile)))
    log.info("Model cubes are %d^3: stride %d scaled to %d", tile, tiling.stride, stride)
    return dataclasses.replace(tiling, tile=tile, stride=stride)


def check_working_grid(shape: Sequence[int], voxel_size: Sequence[float], target: float) -> tuple[int, int, int]:
    """Return the ``[z, y, x]`` shape of the map at ``target`` A/voxel, refusing degenerate or oversized grids.

    Raises InputError when an axis would be under 2 voxels (a wrong voxel size makes the map 2D) and
    DeviceError, before anything is allocated, when the working arrays (at least three float32 copies of
    the resampled map) cannot fit in the memory this process may use.
    """
    vs_zyx = (voxel_size[2], voxel_size[1], voxel_size[0])
    if not all(math.isfinite(v) and v > 0 for v in vs_zyx):
        raise InputError(f"voxel size must be positive and finite, got {_fmt_vs(voxel_size)} A")
    work = tuple(max(1, round(n * v / target)) for n, v in zip(shape, vs_zyx))
    for axis, n, v, m in zip("zyx", shape, vs_zyx, work):
        if m < 2:
            raise InputError(
                f"the map is only {n * v:.3g} A thick along {axis} ({n} voxels of {v:.3g} A), less than 2 voxels "
                f"at {target:g} A/voxel; check the voxel size (header or -s)"
            )
    need, limit = 3 * 4 * math.prod(work), memory_limit()
    if need > limit:
        box = "x".join(str(n) if n < 10**7 else f"{n:.1e}" for n in reversed(work))
        raise DeviceError(
            f"at {target:g} A/voxel the map ({_fmt_shape(shape)} voxels of {_fmt_vs(voxel_size)} A) becomes {box} "
            f"voxels and needs at least {need / 2**30:.3g} GiB of memory, more than the {limit / 2**30:.3g} GiB "
            "available; check the voxel size (header or -s)"
        )
    return work  # type: ignore[return-value]


def half_map_resolution(half1: np.ndarray, half2: np.ndarray, voxel_size: Sequence[float]) -> float:
    """FSC-0.143 resolution (A) between two half maps, unmasked (the conservative figure)."""
    return half_map_fsc(half1, half2, voxel_size).resolution(0.143)


def half_map_fsc(half1: np.ndarray, half2: np.ndarray, voxel_size: Sequence[float]):
    """The unmasked FSC curve (:class:`metrics.FSCCurve`) between two half maps."""
    from .metrics import fsc

    return fsc(half1, half2, voxel_size)


def read_half_maps(
    inputs: Sequence[str | os.PathLike], *, distinct: bool = True
) -> tuple[np.ndarray, np.ndarray | None, GridInfo]:
    """Read one map, or two half maps checked to lie on the same grid: ``(map or half 1, half 2 or None, grid)``.

    ``distinct``: refuse the same file given twice as both halves (``evaluate`` accepts it: one map used
    as both halves).
    """
    if not 1 <= len(inputs) <= 2:
        raise InputError(f"give one map or two half maps, got {len(inputs)} inputs")
    if distinct and len(inputs) == 2 and _same_file(inputs[0], inputs[1]):
        raise InputError(f"{inputs[1]}: half map 2 is the same file as half map 1")
    names = ["half map 1", "half map 2"] if len(inputs) == 2 else ["map"]
    first, grid = read_map(inputs[0], what=names[0])
    if len(inputs) == 1:
        return first, None, grid
    second, grid2 = read_map(inputs[1], what=names[1])
    check_same_grid(grid, grid2, f"{names[0]} ({inputs[0]})", f"{names[1]} ({inputs[1]})")
    return first, second, grid


def _read_mask(mask: str | os.PathLike | None, grid: GridInfo, first: str | os.PathLike) -> np.ndarray | None:
    """The mask (None without one), checked to match the map's shape and to hold values in 0..1."""
    if mask is None:
        return None
    mask_arr, mgrid = read_map(mask, what="mask")
    if mgrid.shape != grid.shape:
        raise InputError(f"{mask}: mask shape {mgrid.shape} differs from map shape {grid.shape} ({first})")
    lo, hi = float(mask_arr.min()), float(mask_arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"{mask}: mask values must lie between 0 and 1, found {lo:.4g} to {hi:.4g}")
    return mask_arr


def check_output(output: str | os.PathLike, inputs: Sequence[str | os.PathLike], *, force: bool) -> Path:
    """Refuse outputs that are an input, a directory, or (without ``force``) an existing file."""
    out = Path(output)
    for path in inputs:
        if path is not None and _same_file(out, path):
            raise InputError(f"{out}: the output would overwrite an input; choose another output name")
    if out.is_dir():
        raise InputError(f"{out}: output path is a directory")
    if out.exists() and not force:
        raise InputError(f"{out}: output file exists; use --force to overwrite")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{out}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{out}: output directory {parent} is not writable")
    return out


@dataclasses.dataclass
class ConfidenceResult:
    """The enhanced average of two half maps, its confidence map (:mod:`confidence`, same shape, 0..1), the
    summary of :func:`confidence.summary` and the half-map FSC-0.143 resolution (A) the confidence used;
    ``halves``: the two enhanced halves when asked for (``keep_halves``), else None."""

    enhanced: np.ndarray
    confidence: np.ndarray
    summary: dict
    resolution: float
    halves: tuple[np.ndarray, np.ndarray] | None = None


def enhance_with_confidence(
    half1: np.ndarray,
    half2: np.ndarray,
    voxel_size: float | Sequence[float],
    *,
    config: EnhanceConfig | None = None,
    mask: np.ndarray | None = None,
    model: LoadedModel | None = None,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
    resolution: float | None = None,
    params=None,
    keep_halves: bool = False,
    d_half: float | None = None,
    fsc=None,
) -> ConfidenceResult:
    """Enhance the average of two half maps, as :func:`enhance` does, and each half on its own with the same
    model and settings; the two enhanced halves give the confidence map (:func:`confidence.confidence_map`).

    ``resolution`` (A): the limit of :func:`enhance` (default: ``config.resolution``, else the half-map
    FSC-0.143 when the limit is on). ``params``: :class:`confidence.ConfidenceParams` (default: the tuned ones).
    ``keep_halves``: return the enhanced halves too (to recompute the confidence with other parameters).
    ``d_half``: the half maps' FSC-0.143 when the caller has it (computed otherwise); ``fsc``: their FSC curve
    (for ``config.condition`` FSC weighting; computed otherwise).
    """
    return _enhance_with_confidence([half1, half2], voxel_size, config=config, mask=mask, model=model,
                                    progress=progress, timings=timings, resolution=resolution, params=params,
                                    keep_halves=keep_halves, d_half=d_half, fsc=fsc)


def _enhance_with_confidence(halves: list, voxel_size, *, config, mask, model, progress, timings, resolution,
                             params, keep_halves, d_half, fsc) -> ConfidenceResult:
    """:func:`enhance_with_confidence` on ``halves`` (a list it empties): each half is let go once enhanced, so
    a caller that hands over its only references saves one map's memory at the peak (the second half's run)."""
    from .confidence import DEFAULT_PARAMS, describe, summary, timed_confidence

    config = config or EnhanceConfig()
    model = model or load(config)
    vs = as_xyz(voxel_size)
    half1, half2 = (np.asarray(h, dtype=np.float32) for h in halves)
    halves.clear()
    if half1.shape != half2.shape:
        raise InputError(f"half maps differ in shape: {half1.shape} and {half2.shape}")
    if fsc is None and (d_half is None or config.condition is ConditionMode.FSCWEIGHT or config.match_amplitudes):
        fsc = half_map_fsc(half1, half2, vs)
    if d_half is None:
        d_half = fsc.resolution(0.143)
        log.info("Half-map FSC-0.143 (unmasked): %.3g A", d_half)
    if resolution is None:
        resolution = config.resolution if config.resolution is not None else d_half
    run = dict(config=config, mask=mask, model=model, progress=progress, timings=timings, resolution=resolution,
               fsc=fsc)
    average = np.add(half1, half2, dtype=np.float32)
    average *= 0.5
    enhanced = enhance(average, vs, **run)
    del average
    log.info("Enhancing each half on its own for the confidence map")
    e1 = enhance(half1, vs, **run)
    del half1
    e2 = enhance(half2, vs, **run)
    del half2
    conf = timed_confidence(e1, e2, vs, d_half, params or DEFAULT_PARAMS, timings)
    kept = (e1, e2) if keep_halves else None
    del e1, e2
    found = summary(enhanced, conf)
    log.info("%s", describe(found))
    return ConfidenceResult(enhanced=enhanced, confidence=conf, summary=found, resolution=d_half, halves=kept)


def enhance_file(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    output: str | os.PathLike,
    *,
    config: EnhanceConfig | None = None,
    force: bool = False,
    model: LoadedModel | Callable[[], LoadedModel] | None = None,
    progress: Progress | None = None,
    voxel_size: float | None = None,
    confidence: str | os.PathLike | None = None,
    report: dict | None = None,
    provenance: bool | dict = True,
) -> Path:
    """Enhance one map or a pair of half maps on disk and write ``output`` atomically.

    The output keeps the input's shape, voxel size, origin and axis order. Inputs are never modified.
    ``voxel_size`` (A) overrides the header's voxel size, for processing and in the output header.
    ``model`` may be a loaded model or a function returning one (called after the inputs are checked).
    ``confidence`` (two half maps only): also write the confidence map (:func:`enhance_with_confidence`) there,
    on the output's grid; both files are written at the end, and a failure leaves neither. ``report``, when
    given, receives ``"confidence"``: the summary (:func:`confidence.summary`).
    ``provenance``: write ``OUT.json`` and, with half maps, ``OUT_fsc.tsv`` beside the output (:mod:`provenance`;
    a dict adds sidecar entries); the header labels are written always.
    """
    t_start = time.perf_counter()
    config = config or EnhanceConfig()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    mask_path = config.normalization.mask if config.normalization.mode is NormMode.MASK else None
    out = check_output(output, [*inputs, mask_path], force=force)
    sidecars = _check_sidecars(out, [*inputs, mask_path], force) if provenance else []
    conf_out = _check_confidence_output(confidence, [out, *sidecars], inputs, mask_path, force)
    auto_limit = config.limit_resolution and config.resolution is None
    volume, half2, grid, mask, curve = _read_for_enhance(inputs, mask_path, halves_apart=conf_out is not None,
                                                         voxel_size=voxel_size)
    d_half = curve.resolution(0.143) if curve is not None else None
    log.info(
        "Input %s: %s voxels, %s A/voxel, origin %s", ", ".join(str(p) for p in inputs),
        _fmt_shape(grid.shape), _fmt_vs(grid.voxel_size), tuple(round(o, 3) for o in grid.origin),
    )
    model = _loaded(model, config, volume, grid, single=curve is None)
    timings: dict[str, float] = {}
    extra = dict(provenance) if isinstance(provenance, dict) else {}
    if conf_out is not None:
        owned = [volume, half2]  # handed over: each half is freed once enhanced
        del volume, half2
        found = _enhance_with_confidence(owned, grid.voxel_size, config=config, mask=mask, model=model,
                                         progress=progress, timings=timings, resolution=None, params=None,
                                         keep_halves=False, d_half=d_half, fsc=curve)
        if report is not None:
            report["confidence"] = found.summary
        result = found.enhanced
        extra["confidence"] = {"map": str(conf_out.resolve()), **found.summary}
    else:  # without the automatic limit, enhance() takes config.resolution
        result = enhance(volume, grid.voxel_size, config=config, mask=mask, model=model, progress=progress,
                         resolution=d_half if auto_limit else None, timings=timings, fsc=curve)
    timings["total"] = time.perf_counter() - t_start
    record = dict(config=config, inputs=inputs, output=out, grid=grid, model=model, d_half=d_half,
                  voxel_size_override=voxel_size, timings=timings)
    write = functools.partial(_write_with_provenance, out, result, grid, force=force, provenance=provenance,
                              curve=curve, record=record, extra=extra)
    _write_confidence_first(conf_out, found if conf_out else None, grid, force, write)
    log.info("Wrote %s", out)
    return out


def _loaded(model, config: EnhanceConfig, volume: np.ndarray, grid: GridInfo, *, single: bool) -> LoadedModel:
    """The model (loaded now when ``model`` is a function or None). For a single map without a resolution,
    once nothing else can refuse the input, :func:`condition.check_single_map` (a warning when it looks
    unfiltered: the network then sees the noise beyond its resolution)."""
    model = model() if callable(model) else (model or load(config))
    if single and config.resolution is None and config.condition is not ConditionMode.NONE:
        from .condition import check_single_map

        check_working_grid(volume.shape, grid.voxel_size, working_voxel_size(model, config))
        check_single_map(volume, grid.voxel_size)
    return model


def _read_for_enhance(inputs, mask_path, *, halves_apart: bool, voxel_size: float | None):
    """``(map or average, half 2 or None, grid, mask, half-map FSC curve or None)``; ``voxel_size`` (``-s``)
    replaces the header's before anything is measured (the FSC's frequencies use it); ``halves_apart`` keeps
    the two half maps (for the confidence map), otherwise they are averaged."""
    volume, half2, grid = read_half_maps(inputs)
    grid = _override_voxel_size(grid, voxel_size)
    mask = _read_mask(mask_path, grid, inputs[0])
    if half2 is None:
        return volume, None, grid, mask, None
    curve = half_map_fsc(volume, half2, grid.voxel_size)
    log.info("Half-map FSC-0.143 (unmasked): %.3g A", curve.resolution(0.143))
    if not halves_apart:
        volume = np.add(volume, half2, dtype=np.float32)  # a new array: inputs stay read-only
        volume *= 0.5
        half2 = None
    return volume, half2, grid, mask, curve


def _write_with_provenance(out: Path, result: np.ndarray, grid: GridInfo, *, force: bool, provenance: bool | dict,
                           curve, record: dict, extra: dict) -> None:
    """The map (header labels naming the engine, weights and limit), then the sidecar and FSC curve;
    if those fail the map is removed too, so a run leaves all of its files or none."""
    from . import provenance as prov

    sidecar = prov.build(**record)
    limit = sidecar["resolution"]["limit_A"]
    write_map(out, result, grid, overwrite=force,
              labels=prov.header_labels(record["model"].card, sidecar["weights"]["sha256"], limit))
    if not provenance:
        return
    sidecar.update(extra)
    try:
        prov.write(out, sidecar, curve)
    except BaseException:
        prov.remove([out])
        raise


def _override_voxel_size(grid: GridInfo, voxel_size: float | None) -> GridInfo:
    if voxel_size is None:
        return grid
    if not (voxel_size > 0 and math.isfinite(voxel_size)):
        raise InputError(f"voxel size (-s) must be a positive number, got {voxel_size!r}")
    return dataclasses.replace(grid, voxel_size=(float(voxel_size),) * 3)


def _check_sidecars(out: Path, inputs, force: bool) -> list[Path]:
    """``OUT.json`` and ``OUT_fsc.tsv``, checked like the output (never overwritten without ``force``)."""
    from . import provenance as prov

    return [check_output(p, inputs, force=force) for p in (prov.sidecar_path(out), prov.fsc_path(out))]


def _check_confidence_output(confidence, taken: list[Path], inputs, mask_path, force: bool) -> Path | None:
    """The confidence map's path, checked like the output's; InputError for a single map or a path the run
    writes anyway (``taken``: the output and its sidecars)."""
    if confidence is None:
        return None
    if len(inputs) != 2:
        raise InputError(f"{confidence}: a confidence map needs two half maps (-i HALF1 -i2 HALF2), "
                         "got one map; nothing written")
    conf_out = check_output(confidence, [*inputs, mask_path], force=force)
    for path in taken:
        if _same_file(conf_out, path) or conf_out.resolve() == path.resolve():
            raise InputError(f"{conf_out}: the confidence map would overwrite {path.name}, written by this run")
    return conf_out


def _write_confidence_first(conf_out: Path | None, found: ConfidenceResult | None, grid: GridInfo, force: bool,
                            write_rest: Callable[[], None]) -> None:
    """Write the confidence map (its summary in a header label; none without ``conf_out``), then the output
    and its provenance (``write_rest``); if those cannot be written the confidence map goes too."""
    from .confidence import header_label

    if conf_out is None:
        write_rest()
        return
    write_map(conf_out, found.confidence, grid, overwrite=force, labels=[header_label(found.summary)])
    try:
        write_rest()
    except BaseException:
        with contextlib.suppress(OSError):
            conf_out.unlink()
        raise
    log.info("Wrote %s", conf_out)


class _StageClock:
    """Times pipeline stages into an optional dict (seconds, summed per stage name)."""

    def __init__(self, sink: dict[str, float] | None) -> None:
        self.sink = sink
        self.last = 0.0

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.last = time.perf_counter() - t0
            if self.sink is not None:
                self.sink[stage] = self.sink.get(stage, 0.0) + self.last


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in reversed(tuple(shape)))


def _fmt_vs(vs: Sequence[float]) -> str:
    vs = tuple(vs)
    if max(vs) - min(vs) < 1e-6:
        return f"{vs[0]:.4g}"
    return "x".join(f"{v:.4g}" for v in vs)
