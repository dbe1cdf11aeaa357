"""``deepemhancer evaluate``: map-model metrics, classical baselines and model-free honesty checks.

Given two half maps (or one map, then used as both halves), an enhanced map (or the network to
make one) and optionally an atomic model, report for the variants (:data:`VARIANTS`) -- the plain
average of the halves, RELION-style automatic B-factor sharpening, the enhanced map and, with a model,
LocScale (model-based local sharpening of the average, :mod:`deepemhancer_engine.locscale`):

* FSC against the model map, masked (soft mask around the atoms) and unmasked, at 0.5 and 0.143;
* CC_mask and CC_box (phenix.map_model_cc) against the model map low-passed at the resolution
  (half-map FSC-0.143, or ``--resolution``);
* the solvent/molecule rms ratio (:func:`metrics.solvent_ratio`: how clean the solvent is) and the
  intensity ratio to the average inside the molecule (:func:`metrics.intensity_ratio`).

Map-model numbers reward a network that makes maps look like models beyond what the data support
(the "metric trap": a network trained on model maps can score well by inventing model-like detail), so
every run also reports model-free checks:

* each half enhanced on its own: FSC between the enhanced halves next to the FSC of the raw halves,
  and the largest gain beyond the raw FSC-0.143 resolution (should be <= ~0);
* ``--noise-test``: two independent pure-noise volumes enhanced; the largest FSC between the
  outputs beyond 10 A (should be ~0: anything consistent is invented by the network);
  :func:`noise_case` does the same for one case of the coloured-noise grid (:mod:`noisegen`);
* ``signal=`` (simulated pairs, the noise-free map the halves share): the in-band excess
  FSC(e1, e2) - FSC(e1, E) FSC(e2, E) per band between 10 A and the resolution
  (:mod:`deepemhancer_engine.honesty`), E the enhanced signal: detail both enhanced halves share that
  the enhanced truth does not have.

Every map the network enhances here (average, each half, noise) gets the same resolution limit as a
``deepemhancer -i half1 -i2 half2`` run would apply: the half-map FSC-0.143 (or ``--resolution``).

:func:`evaluate` returns an :class:`EvaluationResult`; with an output folder it writes ``metrics.tsv``
(columns :data:`METRICS_COLUMNS`; rows :data:`HALF_MAP_KEYS`, :data:`MODEL_METRICS` per variant,
:data:`HONESTY_KEYS`), ``fsc_curves.tsv`` (columns :data:`CURVE_AXIS_COLUMNS`, then one per curve),
``summary.json`` (:meth:`EvaluationResult.to_summary`), ``fsc_model.png``, ``fsc_halves.png`` and
``slices.png``. The command line is :mod:`deepemhancer_engine.commands.evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import metrics as M
from .errors import InputError

log = logging.getLogger(__name__)

Enhancer = Callable[..., np.ndarray]

#: Soft mask for the masked map-model FSC: atoms dilated by this radius (A), cosine edge (A).
FSC_MASK_RADIUS = 3.0
FSC_MASK_EDGE = 4.0
#: Noise-test frequencies: beyond this resolution (A).
NOISE_TEST_BEYOND = 10.0
#: Smallest edge (voxels) of the noise-test volumes: a tiny box has so few Fourier coefficients per shell
#: beyond 10 A that two independent noise maps reach FSC ~0.15 by chance (3 / sqrt(n) for n ~ 400);
#: at 96 voxels of 1 A the chance level is about 0.085. Larger maps are tested at their own size.
NOISE_MIN_EDGE = 96
#: Default seed of the noise test (evaluation seeds are >= 10,000,000; training uses smaller ones).
NOISE_SEED = 10_000_000
#: Seed offset of the second volume of a noise-grid case (the grid's 24 seeds are consecutive: no clash).
NOISE_PAIR_SEED_OFFSET = 1000
#: In-band honesty check: bands from this resolution (A) to the resolution used.
INBAND_LOW = 10.0
#: LocScale (the fourth variant) is reported beside the classical maps, not among them (it needs a model).
VARIANTS = ("average", "sharpened", "enhanced", "locscale")
#: The classical maps: the "best classical" of a metric is whichever of these has the better median.
CLASSICAL = ("average", "sharpened")

# The one list of what metrics.tsv holds (writer, summary printer, model_metrics and benchmarks/quality.py
# all read these; docs/design.md documents each name, unit and meaning).
#: Columns of metrics.tsv.
METRICS_COLUMNS = ("variant", "metric", "value")
#: Rows of metrics.tsv with variant "half_maps" (halves_identical: 1 or 0).
HALF_MAP_KEYS = ("half_fsc0.143_A", "resolution_used_A", "bfactor_A2", "halves_identical")
#: Rows of metrics.tsv per variant (:data:`VARIANTS`): map-model FSC resolutions (A) and correlations.
#: solvent_rms_ratio: metrics.solvent_ratio; intensity_ratio: metrics.intensity_ratio against the average.
MODEL_METRICS = ("fsc0.5_masked_A", "fsc0.5_unmasked_A", "fsc0.143_masked_A", "fsc0.143_unmasked_A",
                 "cc_mask", "cc_box", "solvent_rms_ratio", "intensity_ratio")
#: Which way each metric improves: -1 lower is better, +1 higher, 0 neither (no "best" is chosen).
METRIC_DIRECTION = {"fsc0.5_masked_A": -1, "fsc0.5_unmasked_A": -1, "fsc0.143_masked_A": -1,
                    "fsc0.143_unmasked_A": -1, "cc_mask": 1, "cc_box": 1, "solvent_rms_ratio": -1,
                    "intensity_ratio": 0}
#: Rows of metrics.tsv with variant "honesty" (model-free checks; NaN / NA when not run). inband_*: the
#: in-band excess over its bands (max, mean) and the largest 3 / sqrt(n) of its bands (with ``signal``);
#: max_fsc_gain_in_envelope: the halves' gain over the raw halves inside the envelope the data come back in.
HONESTY_KEYS = ("enhanced_halves_fsc0.143_A", "enhanced_halves_fsc0.5_A", "max_fsc_gain_beyond_raw0.143",
                "noise_max_fsc_beyond_10A", "noise_chance_3sigma", "noise_output_rms_rel",
                "raw_halves_fsc0.143_A", "raw_halves_fsc0.5_A",
                "inband_excess_max", "inband_excess_mean", "inband_chance_3sigma", "max_fsc_gain_in_envelope")
#: The first two columns of fsc_curves.tsv; one column per curve follows (:func:`curve_column`).
CURVE_AXIS_COLUMNS = ("freq_1_per_A", "resolution_A")
#: Curve names (with :func:`model_curve`'s "VARIANT vs model (masked|unmasked)"), in the order written.
RAW_HALVES, ENHANCED_HALVES, NOISE_OUTPUTS = "raw halves", "enhanced halves", "noise outputs"


def model_curve(variant: str, masked: bool) -> str:
    return f"{variant} vs model ({'masked' if masked else 'unmasked'})"


def curve_column(name: str) -> str:
    """The fsc_curves.tsv column of curve ``name``."""
    return name.replace(" ", "_")


def _nan() -> float:
    return float("nan")


@dataclasses.dataclass
class EvaluationResult:
    """Everything :func:`evaluate` measured. ``summary.json`` is :meth:`to_summary` (field names as written
    there: ``half_fsc0143_A`` is ``half_fsc0.143_A``); ``curves`` and ``model_map`` are not in it."""

    label: str
    shape: tuple[int, ...]  # [z, y, x] voxels
    voxel_size: tuple[float, ...]  # (x, y, z) A
    halves_identical: bool
    model: str | None  # the atomic model given (path text), None without one
    #: variant (:data:`VARIANTS`) -> {metric (:data:`MODEL_METRICS`): value}; NaN without a model.
    variants: dict[str, dict[str, float]] = dataclasses.field(
        default_factory=lambda: {v: dict.fromkeys(MODEL_METRICS, _nan()) for v in VARIANTS})
    #: :data:`HONESTY_KEYS` -> value; NaN where the check did not run.
    honesty: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(HONESTY_KEYS, _nan()))
    notes: list[str] = dataclasses.field(default_factory=list)
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # what -> path written
    timing_s: dict[str, float] = dataclasses.field(default_factory=dict)  # stage -> seconds
    half_fsc0143_A: float = dataclasses.field(default=math.nan, metadata={"key": "half_fsc0.143_A"})
    resolution_used_A: float = math.nan  # --resolution, else the half-map FSC-0.143
    bfactor_A2: float = math.nan  # Guinier B of the auto-sharpening
    model_atoms_inside: float | None = dataclasses.field(default=None, metadata={"optional": True})
    cc_mask_radius_A: float | None = dataclasses.field(default=None, metadata={"optional": True})
    #: Solvent of solvent_rms_ratio / intensity_ratio: voxels farther than this (A) from every atom.
    solvent_distance_A: float | None = dataclasses.field(default=None, metadata={"optional": True})
    #: Per band of the in-band check (with ``signal``): :func:`inband_summary` of honesty.InBandExcess.
    inband_excess: dict | None = dataclasses.field(default=None, metadata={"optional": True})
    #: Further maps (``extra=``) scored like the variants: name -> {metric (:data:`MODEL_METRICS`): value}.
    extra_variants: dict[str, dict[str, float]] | None = dataclasses.field(default=None,
                                                                           metadata={"optional": True})
    curves: dict[str, M.FSCCurve] = dataclasses.field(default_factory=dict, metadata={"summary": False})
    #: With a model and a confidence map: :meth:`confidence.Calibration.values` (blocks of the molecule; Spearman
    #: of block confidence with block CC of the enhanced map vs the model map, the naive answer's, quarters).
    confidence_calibration: dict | None = dataclasses.field(default=None, metadata={"optional": True})
    #: The model map low-passed at the resolution (the map CC_mask/CC_box compare with); None without a model.
    model_map: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False,
                                                     metadata={"summary": False})

    def to_summary(self) -> dict:
        """The JSON-ready dict of ``summary.json`` (optional fields only when set)."""
        out: dict = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.metadata.get("summary", True) or (value is None and f.metadata.get("optional")):
                continue
            if isinstance(value, (tuple, list)):
                value = list(value)
            elif isinstance(value, dict):
                value = {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
            out[f.metadata.get("key", f.name)] = value
        return out

    @classmethod
    def from_summary(cls, summary: dict) -> EvaluationResult:
        """The result a ``summary.json`` describes (without curves and model map)."""
        kwargs = {f.name: summary[f.metadata.get("key", f.name)] for f in dataclasses.fields(cls)
                  if f.metadata.get("key", f.name) in summary}
        kwargs["shape"] = tuple(kwargs["shape"])
        kwargs["voxel_size"] = tuple(kwargs["voxel_size"])
        return cls(**kwargs)

    def half_map_values(self) -> dict[str, float]:
        """:data:`HALF_MAP_KEYS` -> value (halves_identical as 1.0 or 0.0)."""
        summary = self.to_summary()
        return {k: float(summary[k]) if isinstance(summary[k], bool) else summary[k] for k in HALF_MAP_KEYS}


@dataclasses.dataclass
class _ModelMaps:
    """The model on the map's grid: model map (full resolution and low-passed at the resolution), the CC_mask
    atom mask, the soft FSC mask and the solvent (voxels farther than ``solvent_distance`` A from every atom)."""

    model_map: np.ndarray
    model_map_lp: np.ndarray
    atom_mask: np.ndarray
    soft_mask: np.ndarray
    solvent: np.ndarray
    atoms_inside: float
    cc_mask_radius_A: float
    solvent_distance_A: float


def _model_maps(model, grid, resolution: float) -> _ModelMaps:
    """Read ``model`` (path or gemmi.Structure) and make its maps and masks on ``grid``."""
    from .modelmap import fraction_inside, mean_bfactor, model_map, model_mask, read_model

    st = read_model(model) if isinstance(model, (str, os.PathLike)) else model
    inside = fraction_inside(st, grid)
    if inside == 0:
        raise InputError(
            f"{model}: no atom of the model lies inside the map box (origin {grid.effective_origin} A, "
            f"size {grid.shape[::-1]} voxels); check the model matches the map"
        )
    if inside < 0.9:
        log.warning("only %.0f%% of the model's atoms lie inside the map box", 100 * inside)
    mmap = model_map(st, grid)
    radius = M.atom_mask_radius(resolution, mean_bfactor(st))
    far = M.solvent_distance(resolution, radius)
    return _ModelMaps(model_map=mmap, model_map_lp=M.lowpass(mmap, grid.voxel_size, resolution),
                      atom_mask=model_mask(st, grid, radius),
                      soft_mask=model_mask(st, grid, FSC_MASK_RADIUS, soft_edge=FSC_MASK_EDGE),
                      solvent=model_mask(st, grid, far) < 0.5, atoms_inside=inside, cc_mask_radius_A=radius,
                      solvent_distance_A=far)


def _score(volumes: dict, maps: _ModelMaps, vs, input_map: np.ndarray | None
           ) -> tuple[dict[str, dict[str, float]], dict[str, M.FSCCurve]]:
    """:data:`MODEL_METRICS` of every map in ``volumes`` (intensity ratio against ``input_map``; NaN without)
    and the map-model FSC curves."""
    metrics, curves = {}, {}
    for name, vol in volumes.items():
        um = M.fsc(vol, maps.model_map, vs)
        mk = M.fsc(vol, maps.model_map, vs, mask=maps.soft_mask)
        curves[model_curve(name, masked=True)] = mk
        curves[model_curve(name, masked=False)] = um
        ratio = (M.intensity_ratio(vol, input_map, maps.atom_mask, maps.solvent) if input_map is not None
                 else _nan())
        values = {"fsc0.5_masked_A": mk.resolution(0.5), "fsc0.5_unmasked_A": um.resolution(0.5),
                  "fsc0.143_masked_A": mk.resolution(0.143), "fsc0.143_unmasked_A": um.resolution(0.143),
                  "cc_mask": M.cc_mask(vol, maps.model_map_lp, maps.atom_mask),
                  "cc_box": M.cc_box(vol, maps.model_map_lp),
                  "solvent_rms_ratio": M.solvent_ratio(vol, maps.atom_mask, maps.solvent), "intensity_ratio": ratio}
        metrics[name] = {k: values[k] for k in MODEL_METRICS}
    return metrics, curves


def model_metrics(volumes: dict, model, grid, resolution: float, *, input_map: np.ndarray | None = None
                  ) -> dict[str, dict[str, float]]:
    """Map-model FSC / CC (the same definitions as :func:`evaluate`) of any maps on ``grid``:
    ``{name: {metric: value}}`` with the metrics :data:`MODEL_METRICS` (intensity_ratio against
    ``input_map``, NaN without). The benchmark scores the training target with it (what a network that
    learnt its target perfectly would reach) and the real maps enhanced at their nominal resolution."""
    return _score(volumes, _model_maps(model, grid, resolution), grid.voxel_size, input_map)[0]


def best_classical(medians: dict[str, float], metric: str) -> str:
    """The classical variant (:data:`CLASSICAL`) with the better of ``medians`` ({variant: median over the
    cases}) for ``metric``: lower for resolutions and the solvent ratio, higher for correlations. The
    yardstick of the enhanced map is the best a user gets without a network, metric by metric.
    ValueError for a metric without a direction."""
    direction = METRIC_DIRECTION[metric]
    if direction == 0:
        raise ValueError(f"{metric} has no better direction")
    found = [(v, medians[v]) for v in CLASSICAL if math.isfinite(medians.get(v, math.nan))]
    if not found:
        return CLASSICAL[0]
    return max(found, key=lambda item: direction * item[1])[0]


def gain_over(value: float, reference: float, metric: str) -> float:
    """How much better ``value`` is than ``reference`` for ``metric`` (positive: better; A for resolutions)."""
    return METRIC_DIRECTION[metric] * (value - reference)


def evaluate(
    half1: np.ndarray,
    half2: np.ndarray,
    grid,
    *,
    enhanced: np.ndarray | None = None,
    enhancer: Enhancer | None = None,
    model=None,
    outdir: str | os.PathLike | None = None,
    noise_test: bool = False,
    resolution: float | None = None,
    seed: int = NOISE_SEED,
    label: str = "",
    plots: bool = True,
    signal: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
    confidence: np.ndarray | None = None,
) -> EvaluationResult:
    """Compute every metric of the module docstring and (with ``outdir``) write the files.

    Args:
        half1, half2: ``[z, y, x]`` half maps; pass the same array twice for a single map.
        grid: ``io.GridInfo`` of the maps (voxel size; origin places the model).
        enhanced: enhanced map; when None it is ``enhancer(average of the halves)``.
        enhancer: callable map -> enhanced map (same shape), used for the halves and noise checks.
        model: PDB/mmCIF path or gemmi.Structure; without it the map-model metrics are NaN and there is no
            LocScale variant.
        resolution: A; overrides the half-map FSC-0.143 resolution (low-pass, sharpening, CC_mask, LocScale).
        signal: the noise-free map the halves share (simulated pairs): runs the in-band honesty check.
        extra: further maps (name -> map) scored against the model like the variants (``result.extra_variants``,
            metrics.tsv rows after the variants), e.g. a real map enhanced at its nominal resolution.
        confidence: the enhanced map's confidence map (``deepemhancer --confidence``); with a model, its
            calibration against the model (``result.confidence_calibration``, ``confidence_calibration.png``).
    """
    t_start = time.perf_counter()
    half1 = np.asarray(half1, dtype=np.float32)
    half2 = np.asarray(half2, dtype=np.float32)
    _check_shapes(half1, half2, signal, {**(extra or {}), **({"confidence": confidence} if confidence is not None
                                                             else {})})
    vs = tuple(float(v) for v in grid.voxel_size)
    result = EvaluationResult(label=label, shape=tuple(half1.shape), voxel_size=vs,
                              halves_identical=half1 is half2 or bool(np.array_equal(half1, half2)),
                              model=str(model) if model is not None else None)
    raw = _half_map_fsc(half1, half2, vs, resolution, result)
    if not result.halves_identical and hasattr(enhancer, "with_fsc"):  # every map made as the CLI makes it
        enhancer = enhancer.with_fsc(raw)
    volumes = _variants(half1, half2, vs, enhanced, enhancer, resolution, result)
    calibrated = None
    if model is not None:
        maps = _with_model(volumes, model, grid, result, extra or {})
        calibrated = _calibrate(confidence, volumes["enhanced"], maps, half1, half2, result)
    elif confidence is not None:
        result.notes.append("confidence map given without a model: no calibration")
    _honesty(half1, half2, volumes, vs, raw, enhancer, noise_test, seed, result, signal)
    if outdir is not None:
        write_outputs(result, Path(outdir), volumes, plots=plots, calibrated=calibrated)
    result.timing_s["total"] = time.perf_counter() - t_start
    return result


def _check_shapes(half1: np.ndarray, half2: np.ndarray, signal, extra: dict) -> None:
    """InputError unless the half maps, ``signal`` and the ``extra`` maps share one shape (extra names must not
    be variant names)."""
    if half1.shape != half2.shape:
        raise InputError(f"half map 2 shape {half2.shape} differs from half map 1 shape {half1.shape}")
    if signal is not None and np.shape(signal) != half1.shape:
        raise InputError(f"signal shape {np.shape(signal)} differs from the half maps' shape {half1.shape}")
    for name, vol in extra.items():
        if name in VARIANTS or np.shape(vol) != half1.shape:
            raise InputError(f"extra map {name!r}: the name of a variant, or shape {np.shape(vol)} is not "
                             f"{half1.shape}")


def _calibrate(confidence, enhanced, maps: _ModelMaps, half1, half2, result: EvaluationResult):
    """:func:`confidence.calibration` of ``confidence`` against the model (molecule: the CC_mask atom mask; the
    naive answer from the raw halves unless they are one map); ``None`` without a confidence map, and with a
    note when it cannot run."""
    from .confidence import calibration

    if confidence is None:
        return None
    halves = None if result.halves_identical else (half1, half2)
    try:
        found = calibration(confidence, enhanced, maps.model_map, maps.atom_mask > 0.5, result.voxel_size,
                            halves=halves)
    except InputError as err:
        result.notes.append(f"confidence calibration not run: {err}")
        return None
    result.confidence_calibration = found.values()
    return found


def _with_model(volumes: dict, model, grid, result: EvaluationResult, extra: dict) -> _ModelMaps:
    """The LocScale variant (added to ``volumes``) and the map-model metrics of every variant and ``extra`` map;
    returns the model's maps."""
    from .locscale import locscale

    t0 = time.perf_counter()
    res, vs = result.resolution_used_A, result.voxel_size
    maps = _model_maps(model, grid, res)
    result.model_atoms_inside, result.cc_mask_radius_A = maps.atoms_inside, maps.cc_mask_radius_A
    result.solvent_distance_A = maps.solvent_distance_A
    t1 = time.perf_counter()
    # Of the average (the map a user would sharpen), with the full-resolution model map (LocScale's reference
    # profile; the atoms' own B), low-passed at the resolution used; no mask: the whole box, as the other variants.
    volumes["locscale"] = locscale(volumes["average"], maps.model_map, vs, resolution=res)
    result.timing_s["locscale"] = time.perf_counter() - t1
    metrics, curves = _score({**volumes, **extra}, maps, vs, volumes["average"])
    for name in volumes:
        result.variants[name].update(metrics[name])
    if extra:
        result.extra_variants = {name: metrics[name] for name in extra}
    result.curves.update(curves)
    result.model_map = maps.model_map_lp
    result.timing_s["model_metrics"] = time.perf_counter() - t0 - result.timing_s["locscale"]
    return maps


def _half_map_fsc(half1, half2, vs, resolution: float | None, result: EvaluationResult) -> M.FSCCurve:
    """FSC of the raw halves; sets the half-map resolution and the resolution used from here on."""
    raw = M.fsc(half1, half2, vs)
    result.curves[RAW_HALVES] = raw
    result.half_fsc0143_A = raw.resolution(0.143)
    if result.halves_identical and not resolution:
        result.notes.append("halves identical and no --resolution: resolution = Nyquist (FSC is 1 everywhere)")
    result.resolution_used_A = float(resolution) if resolution else result.half_fsc0143_A
    return raw


def _variants(half1, half2, vs, enhanced, enhancer, resolution, result: EvaluationResult) -> dict:
    """The maps compared without a model: average of the halves, auto-sharpened, enhanced (made here if None)."""
    average = 0.5 * (half1 + half2)
    sharp = M.auto_sharpen(half1, half2, vs, resolution=resolution)
    result.bfactor_A2 = sharp.bfactor
    if enhanced is None:
        if enhancer is None:
            raise InputError("give an enhanced map or an enhancer (network) to evaluate")
        t0 = time.perf_counter()
        enhanced = _apply(enhancer, average, result.resolution_used_A)
        result.timing_s["enhance"] = time.perf_counter() - t0
    enhanced = np.asarray(enhanced, dtype=np.float32)
    if enhanced.shape != half1.shape:
        raise InputError(f"enhanced map shape {enhanced.shape} differs from the input shape {half1.shape}")
    return {"average": average, "sharpened": sharp.volume, "enhanced": enhanced}


def _honesty(half1, half2, volumes: dict, vs, raw: M.FSCCurve, enhancer: Enhancer | None, noise_test: bool,
             seed: int, result: EvaluationResult, signal: np.ndarray | None = None) -> None:
    """Independent-halves, in-band and pure-noise checks: fills ``result.honesty`` and the curves."""
    result.honesty["raw_halves_fsc0.143_A"] = raw.resolution(0.143)
    result.honesty["raw_halves_fsc0.5_A"] = raw.resolution(0.5)
    if enhancer is None:
        result.notes.append("no network: independent-halves and noise checks not run")
    elif result.halves_identical:
        result.notes.append("halves identical (one map used twice): independent-halves check not applicable")
    else:
        e1, e2 = _independent_halves(half1, half2, vs, raw, enhancer, result)
        if signal is not None:
            _in_band(e1, e2, half1, half2, signal, vs, enhancer, result)
    if noise_test and enhancer is not None:
        _noise_test(volumes["average"], volumes["enhanced"], vs, raw, enhancer, seed, result)


def _independent_halves(half1, half2, vs, raw: M.FSCCurve, enhancer: Enhancer, result: EvaluationResult
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Each half enhanced on its own: a network adding only what the data hold gains no FSC beyond the raw
    halves' resolution. Returns the enhanced halves (the in-band check reuses them)."""
    t0 = time.perf_counter()
    limit = result.resolution_used_A
    e1, e2 = _apply(enhancer, half1, limit), _apply(enhancer, half2, limit)
    ce = M.fsc(e1, e2, vs)
    result.curves[ENHANCED_HALVES] = ce
    h = result.honesty
    h["enhanced_halves_fsc0.143_A"] = ce.resolution(0.143)
    h["enhanced_halves_fsc0.5_A"] = ce.resolution(0.5)
    h["max_fsc_gain_beyond_raw0.143"] = M.max_fsc_gain(ce, raw, raw.resolution(0.143))
    h["max_fsc_gain_in_envelope"] = M.max_fsc_gain(ce, _enveloped_raw(half1, half2, vs, raw, enhancer, limit),
                                                   raw.resolution(0.143))
    result.timing_s["halves"] = time.perf_counter() - t0
    return e1, e2


def _enveloped_raw(half1, half2, vs, raw: M.FSCCurve, enhancer: Enhancer, limit: float) -> M.FSCCurve:
    """The FSC of the raw halves put through the resolution limit the way the enhancer's output is, inside the
    envelope the enhancer finds for each (:func:`postprocess.limit_resolution` with each half as its own
    "enhanced" map); ``raw`` when it puts the data back everywhere. Masking the solvent raises the FSC of any
    two maps beyond the resolution (less noise, the same signal): this is the like-for-like reference."""
    from .postprocess import limit_resolution

    envelope = getattr(enhancer, "envelope", None)
    found = [envelope(h, resolution=limit) for h in (half1, half2)] if envelope is not None else [None, None]
    if any(e is None for e in found):
        return raw
    a, b = (limit_resolution(h, h, vs, limit, envelope=e)[0] for h, e in zip((half1, half2), found))
    return M.fsc(a, b, vs)


def _in_band(e1, e2, half1, half2, signal, vs, enhancer: Enhancer, result: EvaluationResult) -> None:
    """The in-band excess (honesty.in_band_excess) of the enhanced halves against the enhanced signal E, made
    with the halves' resolution limit and (enhancers that can) the halves' input normalisation."""
    from .honesty import in_band_excess

    t0 = time.perf_counter()
    nyquist = 2.0 * max(vs)
    high = max(result.resolution_used_A, nyquist * (1.0 + 1e-6))  # no band beyond Nyquist
    if not high < INBAND_LOW:
        result.notes.append(f"in-band check not run: resolution {high:.3g} A is not finer than {INBAND_LOW:g} A")
        return
    matched = getattr(enhancer, "matched_to", None)
    truth_enhancer = matched(half1, half2, resolution=result.resolution_used_A) if matched is not None else enhancer
    truth = _apply(truth_enhancer, np.asarray(signal, dtype=np.float32), result.resolution_used_A)
    try:
        found = in_band_excess(e1, e2, truth, vs, high=high, low=INBAND_LOW)
    except InputError as err:  # a box too small for the bands
        result.notes.append(f"in-band check not run: {err}")
        return
    result.inband_excess = inband_summary(found)
    h = result.honesty
    h["inband_excess_max"], h["inband_excess_mean"] = found.max, found.mean
    h["inband_chance_3sigma"] = float(np.max(found.chance))
    result.timing_s["inband"] = time.perf_counter() - t0


def inband_summary(found) -> dict:
    """The JSON-ready per-band record of an honesty.InBandExcess (``EvaluationResult.inband_excess``): band
    edges in A (coarse to fine), excess, FSC(e1, e2), FSC(e1, E), FSC(e2, E), coefficients n, 3 / sqrt(n)."""
    return {"edges_A": [float(1.0 / e) for e in found.edges], "excess": found.excess.tolist(),
            "fsc_halves": found.fsc_halves.tolist(), "fsc1_truth": found.fsc1_truth.tolist(),
            "fsc2_truth": found.fsc2_truth.tolist(), "n": found.n.tolist(), "chance_3sigma": found.chance.tolist()}


def noise_fsc(out1: np.ndarray, out2: np.ndarray, vs) -> tuple[M.FSCCurve, float, float]:
    """FSC of two enhanced pure-noise maps, its largest value beyond :data:`NOISE_TEST_BEYOND` and the 3-sigma
    chance level there, ``3 / sqrt(n)`` of the shell with the fewest coefficients beyond it (the loosest)."""
    cn = M.fsc(out1, out2, vs)
    beyond = cn.n[(cn.freq > 1.0 / NOISE_TEST_BEYOND) & (cn.n > 0)]
    chance = float(3.0 / np.sqrt(beyond.min())) if beyond.size else _nan()
    return cn, M.max_fsc_beyond(cn, NOISE_TEST_BEYOND), chance


def _noise_test(average, enhanced, vs, raw: M.FSCCurve, enhancer: Enhancer, seed: int,
                result: EvaluationResult) -> None:
    """Two independent pure-noise maps enhanced: whatever their outputs share is invented by the network."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    std = float(np.std(average)) or 1.0
    shape = tuple(max(n, NOISE_MIN_EDGE) for n in average.shape)
    limit = result.resolution_used_A
    every = every_cube(enhancer)
    outs = [_apply(every, rng.normal(0.0, std, shape).astype(np.float32), limit) for _ in range(2)]
    cn, top, chance = noise_fsc(outs[0], outs[1], vs)
    if shape == average.shape:
        result.curves[NOISE_OUTPUTS] = cn
    else:  # on the case's shells for the curve files and plots (interpolated)
        result.curves[NOISE_OUTPUTS] = M.FSCCurve(freq=raw.freq, fsc=np.interp(raw.freq, cn.freq, cn.fsc),
                                                  n=np.interp(raw.freq, cn.freq, cn.n))
        result.notes.append(f"noise test on {'x'.join(map(str, shape[::-1]))} voxels (at least {NOISE_MIN_EDGE})")
    h = result.honesty
    h["noise_max_fsc_beyond_10A"], h["noise_chance_3sigma"] = top, chance
    h["noise_output_rms_rel"] = M.rms(outs[0]) / (M.rms(enhanced) or 1.0)
    result.timing_s["noise"] = time.perf_counter() - t0


@dataclasses.dataclass
class NoiseCaseResult:
    """One case of the coloured-noise grid (:func:`noise_case`)."""

    name: str
    spectrum: str
    voxel_size: float
    seeds: tuple[int, int]
    edge: int  # voxels per box edge
    max_fsc_beyond_10A: float
    chance_3sigma: float
    output_rms_rel: float  # rms of the first output over rms of its input
    seconds: float

    @property
    def within_chance(self) -> bool:
        return bool(self.max_fsc_beyond_10A <= self.chance_3sigma)

    @property
    def under_0143(self) -> bool:
        return bool(self.max_fsc_beyond_10A < 0.143)

    @property
    def passed(self) -> bool:
        """Within the 3-sigma chance level and under 0.143."""
        return self.within_chance and self.under_0143


def noise_case(enhancer: Enhancer, case, edge: int = NOISE_MIN_EDGE) -> NoiseCaseResult:
    """One case of the noise grid (``noisegen.NoiseCase``): two independent noise volumes of ``edge`` voxels
    (seeds ``case.seed`` and ``case.seed +`` :data:`NOISE_PAIR_SEED_OFFSET`) enhanced with no resolution limit
    passed (``resolution=None``: the enhancer's default; no mask) and compared beyond 10 A."""
    from .noisegen import coloured_noise

    t0 = time.perf_counter()
    edge = max(int(edge), NOISE_MIN_EDGE)
    seeds = (int(case.seed), int(case.seed) + NOISE_PAIR_SEED_OFFSET)
    vs = (float(case.voxel_size),) * 3
    inputs = [coloured_noise((edge,) * 3, vs, case.spectrum, s) for s in seeds]
    every = every_cube(enhancer)
    outs = [_apply(every, x, None) for x in inputs]
    _, top, chance = noise_fsc(outs[0], outs[1], vs)
    rel = M.rms(outs[0])  # the inputs have std 1 exactly
    return NoiseCaseResult(name=case.name, spectrum=case.spectrum, voxel_size=float(case.voxel_size), seeds=seeds,
                           edge=edge, max_fsc_beyond_10A=top, chance_3sigma=chance, output_rms_rel=rel,
                           seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------- files


def tsv_rows(result: EvaluationResult) -> list[tuple[str, str, float]]:
    """``(variant, metric, value)`` rows of metrics.tsv: half-map scalars, per-variant (then per extra map)
    metrics, honesty."""
    rows = [("half_maps", k, v) for k, v in result.half_map_values().items()]
    for name, values in {**result.variants, **(result.extra_variants or {})}.items():
        rows.extend((name, k, values[k]) for k in MODEL_METRICS)
    rows.extend(("honesty", k, result.honesty[k]) for k in HONESTY_KEYS)
    rows.extend(("confidence", k, v) for k, v in (result.confidence_calibration or {}).items())
    return rows


def _fmt(v: float) -> str:
    return "NA" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def write_outputs(result: EvaluationResult, outdir: Path, volumes: dict, *, plots: bool = True,
                  calibrated=None) -> None:
    """Write the TSVs, the JSON summary and (``plots``) the PNG figures into ``outdir`` (with ``calibrated``, a
    confidence.Calibration, also confidence_calibration.png)."""
    outdir.mkdir(parents=True, exist_ok=True)
    files = result.files
    files["metrics"] = str(_write_metrics_tsv(result, outdir / "metrics.tsv"))
    files["curves"] = str(write_curves_tsv(result.curves, outdir / "fsc_curves.tsv"))
    (outdir / "summary.json").write_text(json.dumps(result.to_summary(), indent=1, default=float))
    files["summary"] = str(outdir / "summary.json")
    if plots:
        files.update(make_plots(result, outdir, volumes))
    if plots and calibrated is not None:
        from .plots import plot_calibration

        files["confidence_png"] = plot_calibration(calibrated, outdir / "confidence_calibration.png",
                                                   title=result.label)


def _write_metrics_tsv(result: EvaluationResult, path: Path) -> Path:
    """:data:`METRICS_COLUMNS`, one row per :func:`tsv_rows` entry, then the notes (variant ``note``)."""
    lines = ["\t".join(METRICS_COLUMNS)] + [f"{a}\t{b}\t{_fmt(c)}" for a, b, c in tsv_rows(result)]
    lines += [f"note\t{i}\t{n}" for i, n in enumerate(result.notes)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_curves_tsv(curves: dict[str, M.FSCCurve], path: Path) -> Path:
    """:data:`CURVE_AXIS_COLUMNS` then one FSC column per curve, on the shells of the first curve."""
    first = next(iter(curves.values()))
    header = "\t".join([*CURVE_AXIS_COLUMNS, *(curve_column(k) for k in curves)])
    body = [f"{f:.5f}\t{(1 / f if f > 0 else math.inf):.3f}\t" + "\t".join(f"{c.fsc[i]:.4f}" for c in curves.values())
            for i, f in enumerate(first.freq)]
    path.write_text("\n".join([header, *body]) + "\n")
    return path


def make_plots(result: EvaluationResult, outdir: Path, volumes: dict) -> dict:
    """fsc_model.png (variants vs model), fsc_halves.png (honesty checks), slices.png."""
    from .plots import plot_fsc, plot_slices

    curves, label, files = result.curves, result.label or "", {}
    res = {"half-map 0.143": result.half_fsc0143_A}
    model_curves = {k: v for k, v in curves.items() if "vs model" in k}
    if model_curves:
        styles = {k: ("--" if "unmasked" in k else "-") for k in model_curves}
        files["fsc_model_png"] = plot_fsc(model_curves, outdir / "fsc_model.png", styles=styles, marks=res,
                                          title=f"{label} FSC against the model map (solid: masked)".strip())
    half_curves = {k: v for k, v in curves.items() if "vs model" not in k}
    files["fsc_halves_png"] = plot_fsc(half_curves, outdir / "fsc_halves.png", marks=res,
                                       title=f"{label} model-free checks".strip())
    shown = dict(volumes)
    if result.model_map is not None:
        shown["model map (low-passed)"] = result.model_map
    files["slices_png"] = plot_slices(shown, outdir / "slices.png", title=label)
    return files


#: The columns of the summary table: (metric of :data:`MODEL_METRICS`, title, width).
SUMMARY_TABLE = (("fsc0.5_masked_A", "FSC0.5 masked", 13), ("fsc0.5_unmasked_A", "unmasked", 9),
                 ("cc_mask", "CC_mask", 8), ("cc_box", "CC_box", 7), ("solvent_rms_ratio", "solvent/mol", 11))


def format_summary(result: EvaluationResult) -> str:
    """A short human-readable table of the main numbers."""
    lines = [f"half-map FSC-0.143: {_fmt(result.half_fsc0143_A)} A; resolution used "
             f"{_fmt(result.resolution_used_A)} A; Guinier B {_fmt(result.bfactor_A2)} A^2",
             f"{'variant':<11} " + " ".join(f"{title:>{width}}" for _, title, width in SUMMARY_TABLE)]
    for name, v in result.variants.items():
        lines.append(f"{name:<11} " + " ".join(f"{_fmt(v[key]):>{width}}" for key, _, width in SUMMARY_TABLE))
    lines += [f"{k}: {_fmt(result.honesty[k])}" for k in HONESTY_KEYS]
    lines += [f"confidence {k}: {_fmt(v)}" for k, v in (result.confidence_calibration or {}).items()]
    lines += [f"note: {n}" for n in result.notes] + [f"wrote {p}" for p in result.files.values()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the network


def every_cube(enhancer: Enhancer) -> Enhancer:
    """``enhancer`` running every cube (no solvent-cube skipping), for pure-noise inputs: a noise map holds no
    molecule, so with skipping the network would not run at all and the check would pass by construction.
    Enhancers that do not skip are returned as they are."""
    unskipped = getattr(enhancer, "without_skipping", None)
    return unskipped() if unskipped is not None else enhancer


def _apply(enhancer: Enhancer, volume: np.ndarray, resolution: float | None) -> np.ndarray:
    """``enhancer(volume)``, passing the resolution limit to enhancers that take one."""
    if getattr(enhancer, "takes_resolution", False):
        return enhancer(volume, resolution=resolution)
    return enhancer(volume)


class NetworkEnhancer:
    """``volume -> enhanced volume`` for maps of one voxel size with a loaded network; ``resolution``
    (A) is the limit of :func:`pipeline.enhance` (None: ``config.resolution``); ``fsc``: the half maps' FSC curve
    the CLI gives :func:`pipeline.enhance` (conditioning and the classical map's FSC weighting), set by
    :func:`evaluate` for half maps (:meth:`with_fsc`), so that every map it enhances is made as a user's run
    makes it."""

    takes_resolution = True

    def __init__(self, config, voxel_size, loaded, fsc=None) -> None:
        self.config, self.voxel_size, self.loaded, self.fsc = config, voxel_size, loaded, fsc

    def __call__(self, volume: np.ndarray, resolution: float | None = None) -> np.ndarray:
        from .pipeline import enhance

        return enhance(volume, self.voxel_size, config=self.config, model=self.loaded, resolution=resolution,
                       fsc=self.fsc)

    def with_fsc(self, curve) -> NetworkEnhancer:
        """This enhancer with the half maps' FSC curve."""
        return NetworkEnhancer(self.config, self.voxel_size, self.loaded, curve)

    def envelope(self, volume: np.ndarray, resolution: float | None = None) -> np.ndarray | None:
        """Where the enhancement of ``volume`` puts the data beyond ``resolution`` back
        (:func:`pipeline.data_envelope`; None: everywhere)."""
        from .pipeline import data_envelope

        return data_envelope(volume, self.voxel_size, config=self.config, model=self.loaded, resolution=resolution,
                             fsc=self.fsc)

    def without_skipping(self) -> NetworkEnhancer:
        """This enhancer running every cube (``EnhanceConfig.every_cube``; see :func:`every_cube`)."""
        return NetworkEnhancer(self.config.every_cube(), self.voxel_size, self.loaded, self.fsc)

    def matched_to(self, *volumes: np.ndarray, resolution: float | None = None) -> NetworkEnhancer:
        """This enhancer with its input normalisation fixed to the noise statistics ``volumes`` get (their mean
        solvent-noise mean, rms std, measured on the network's grid as :func:`pipeline.enhance` does, after
        the conditioning at ``resolution``: :func:`condition.condition`).

        Why: the in-band check enhances the noise-free signal; normalised by its own (near-zero) solvent noise it
        would enter the network tens of times larger than the halves do, and a nonlinear network would be tested
        at a level it never sees. With the halves' statistics the signal goes in exactly as it sits in them.
        Other normalisation modes (a mask) are returned unchanged.
        """
        from .condition import condition
        from .config import NormMode
        from .fourier import as_xyz
        from .normalize import estimate_noise
        from .pipeline import working_voxel_size
        from .resample import to_working_grid

        if self.config.normalization.mode is not NormMode.AUTO:
            return self
        target, vs = working_voxel_size(self.loaded, self.config), as_xyz(self.voxel_size)
        limit = resolution if resolution is not None else self.config.resolution
        stats = [estimate_noise(to_working_grid(condition(v, vs, self.config.condition, limit), vs, target=target)[0])
                 for v in volumes]
        norm = dataclasses.replace(self.config.normalization, mode=NormMode.STATS,
                                   noise_mean=float(np.mean([m for m, _ in stats])),
                                   noise_std=float(np.sqrt(np.mean([sd * sd for _, sd in stats]))))
        return NetworkEnhancer(dataclasses.replace(self.config, normalization=norm), self.voxel_size, self.loaded,
                               self.fsc)


def make_enhancer(config, voxel_size, *, loaded=None) -> NetworkEnhancer:
    """Return an enhancer for maps of ``voxel_size``, loading the network once (or reusing ``loaded``
    from ``pipeline.load``)."""
    from .pipeline import load

    loaded = loaded or load(config)
    if getattr(loaded.card, "is_placeholder", False):
        log.warning("evaluating RANDOM-WEIGHTS placeholder model %s", getattr(loaded.card, "name", "?"))
    return NetworkEnhancer(config, voxel_size, loaded)
