"""``deepemhancer evaluate``: map-model metrics, classical baselines and model-free honesty checks.

Given two half maps (or one map, then used as both halves), an enhanced map (or the network to
make one) and optionally an atomic model, report for three variants -- the plain average of the
halves, RELION-style automatic B-factor sharpening, and the enhanced map:

* FSC against the model map, masked (soft mask around the atoms) and unmasked, at 0.5 and 0.143;
* CC_mask and CC_box (phenix.map_model_cc) against the model map low-passed at the resolution
  (half-map FSC-0.143, or ``--resolution``).

Map-model numbers reward a network that makes maps look like models beyond what the data support
(docs/peers.md, "metric trap"), so every run also reports model-free checks:

* each half enhanced on its own: FSC between the enhanced halves next to the FSC of the raw halves,
  and the largest gain beyond the raw FSC-0.143 resolution (should be <= ~0);
* ``--noise-test``: two independent pure-noise volumes enhanced; the largest FSC between the
  outputs beyond 10 A (should be ~0: anything consistent is invented by the network).

Every map the network enhances here (average, each half, noise) gets the same resolution limit as a
``deepemhancer -i half1 -i2 half2`` run would apply: the half-map FSC-0.143 (or ``--resolution``).

Writes ``metrics.tsv`` (variant, metric, value), ``fsc_curves.tsv``, ``summary.json``,
``fsc_model.png``, ``fsc_halves.png`` and ``slices.png`` into ``--outdir``.
"""

from __future__ import annotations

import argparse
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
#: at 96 voxels the chance level is ~0.07. Larger maps are tested at their own size.
NOISE_MIN_EDGE = 96
#: Default seed of the noise test (evaluation seeds are >= 10,000,000; training uses smaller ones).
NOISE_SEED = 10_000_000
VARIANTS = ("average", "sharpened", "enhanced")


def _nan() -> float:
    return float("nan")


def _model_metrics(volumes: dict, model, grid, resolution: float, curves: dict, out: dict) -> None:
    """Map-model FSC / CC for every variant; fills ``out['variants']`` and ``curves``."""
    from .modelmap import fraction_inside, mean_bfactor, model_map, model_mask, read_model

    geo = grid
    st = read_model(model) if isinstance(model, (str, os.PathLike)) else model
    inside = fraction_inside(st, geo)
    out["model_atoms_inside"] = inside
    if inside == 0:
        raise InputError(
            f"{model}: no atom of the model lies inside the map box (origin {geo.effective_origin} A, "
            f"size {geo.shape[::-1]} voxels); check the model matches the map"
        )
    if inside < 0.9:
        log.warning("only %.0f%% of the model's atoms lie inside the map box", 100 * inside)
    vs = geo.voxel_size
    mmap = model_map(st, geo)
    mmap_lp = M.lowpass(mmap, vs, resolution)
    radius = M.atom_mask_radius(resolution, mean_bfactor(st))
    out["cc_mask_radius_A"] = radius
    atom_mask = model_mask(st, geo, radius)
    soft = model_mask(st, geo, FSC_MASK_RADIUS, soft_edge=FSC_MASK_EDGE)
    for name, vol in volumes.items():
        um = M.fsc(vol, mmap, vs)
        mk = M.fsc(vol, mmap, vs, mask=soft)
        curves[f"{name} vs model (masked)"] = mk
        curves[f"{name} vs model (unmasked)"] = um
        out["variants"][name].update({
            "fsc0.5_masked_A": mk.resolution(0.5), "fsc0.5_unmasked_A": um.resolution(0.5),
            "fsc0.143_masked_A": mk.resolution(0.143), "fsc0.143_unmasked_A": um.resolution(0.143),
            "cc_mask": M.cc_mask(vol, mmap_lp, atom_mask), "cc_box": M.cc_box(vol, mmap_lp),
        })
    out["_model_map"] = mmap_lp


def model_metrics(volumes: dict, model, grid, resolution: float) -> dict:
    """Map-model FSC / CC (the same definitions as :func:`evaluate`) of any maps on ``grid``:
    ``{name: {"fsc0.5_masked_A": ..., "cc_mask": ..., ...}}``. The benchmark scores the training target
    with it: what a network that learnt its target perfectly would reach."""
    out: dict = {"variants": {name: {} for name in volumes}}
    _model_metrics(volumes, model, grid, resolution, {}, out)
    return out["variants"]


def _honesty(half1, half2, average, enhanced, vs, raw: M.FSCCurve, identical: bool,
             enhancer: Enhancer | None, noise_test: bool, seed: int, curves: dict, out: dict) -> None:
    """Independent-halves and pure-noise checks; fills ``out['honesty']`` and ``curves``."""
    h = out["honesty"]
    limit = out.get("resolution_used_A")
    res_raw = raw.resolution(0.143)
    h["raw_halves_fsc0.143_A"] = res_raw
    h["raw_halves_fsc0.5_A"] = raw.resolution(0.5)
    if enhancer is None:
        out["notes"].append("no network: independent-halves and noise checks not run")
    elif identical:
        out["notes"].append("halves identical (one map used twice): independent-halves check not applicable")
    else:
        t0 = time.perf_counter()
        e1, e2 = _apply(enhancer, half1, limit), _apply(enhancer, half2, limit)
        ce = M.fsc(e1, e2, vs)
        curves["enhanced halves"] = ce
        h["enhanced_halves_fsc0.143_A"] = ce.resolution(0.143)
        h["enhanced_halves_fsc0.5_A"] = ce.resolution(0.5)
        h["max_fsc_gain_beyond_raw0.143"] = M.max_fsc_gain(ce, raw, res_raw)
        out["timing_s"]["halves"] = time.perf_counter() - t0
    if noise_test and enhancer is not None:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        std = float(np.std(average)) or 1.0
        shape = tuple(max(n, NOISE_MIN_EDGE) for n in average.shape)
        outs = [_apply(enhancer, rng.normal(0.0, std, shape).astype(np.float32), limit) for _ in range(2)]
        cn = M.fsc(outs[0], outs[1], vs)
        if shape == average.shape:
            curves["noise outputs"] = cn
        else:  # on the case's shells for the curve files and plots (interpolated)
            curves["noise outputs"] = M.FSCCurve(freq=raw.freq, fsc=np.interp(raw.freq, cn.freq, cn.fsc),
                                                 n=np.interp(raw.freq, cn.freq, cn.n))
            out["notes"].append(f"noise test on {'x'.join(map(str, shape[::-1]))} voxels (at least {NOISE_MIN_EDGE})")
        h["noise_max_fsc_beyond_10A"] = M.max_fsc_beyond(cn, NOISE_TEST_BEYOND)
        beyond = cn.n[(cn.freq > 1.0 / NOISE_TEST_BEYOND) & (cn.n > 0)]
        h["noise_chance_3sigma"] = float(3.0 / np.sqrt(beyond.min())) if beyond.size else _nan()
        rms = float(np.sqrt(np.mean(enhanced.astype(np.float64) ** 2))) or 1.0
        h["noise_output_rms_rel"] = float(np.sqrt(np.mean(outs[0].astype(np.float64) ** 2))) / rms
        out["timing_s"]["noise"] = time.perf_counter() - t0


def _variants(half1, half2, vs, enhanced, enhancer, resolution, out: dict) -> dict:
    """The three maps compared: average of the halves, auto-sharpened, enhanced (made here if None)."""
    average = 0.5 * (half1 + half2)
    sharp = M.auto_sharpen(half1, half2, vs, resolution=resolution)
    out["bfactor_A2"] = sharp.bfactor
    if enhanced is None:
        if enhancer is None:
            raise InputError("give an enhanced map or an enhancer (network) to evaluate")
        t0 = time.perf_counter()
        enhanced = _apply(enhancer, average, out.get("resolution_used_A"))
        out["timing_s"]["enhance"] = time.perf_counter() - t0
    enhanced = np.asarray(enhanced, dtype=np.float32)
    if enhanced.shape != half1.shape:
        raise InputError(f"enhanced map shape {enhanced.shape} differs from the input shape {half1.shape}")
    for name in VARIANTS:
        out["variants"][name] = dict.fromkeys(
            ("fsc0.5_masked_A", "fsc0.5_unmasked_A", "fsc0.143_masked_A", "fsc0.143_unmasked_A",
             "cc_mask", "cc_box"), _nan())
    return {"average": average, "sharpened": sharp.volume, "enhanced": enhanced}


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
) -> dict:
    """Compute every metric of the module docstring and (with ``outdir``) write the files.

    Args:
        half1, half2: ``[z, y, x]`` half maps; pass the same array twice for a single map.
        grid: ``io.GridInfo`` of the maps (voxel size; origin places the model).
        enhanced: enhanced map; when None it is ``enhancer(average of the halves)``.
        enhancer: callable map -> enhanced map (same shape), used for the halves and noise checks.
        model: PDB/mmCIF path or gemmi.Structure; without it the map-model metrics are NaN.
        resolution: A; overrides the half-map FSC-0.143 resolution (low-pass, sharpening, CC_mask).

    Returns:
        A dict: scalars, ``variants`` (per-variant metrics), ``honesty``, ``curves`` (FSCCurve),
        ``notes``, ``files``, ``timing_s``.
    """
    t_start = time.perf_counter()
    half1 = np.asarray(half1, dtype=np.float32)
    half2 = np.asarray(half2, dtype=np.float32)
    if half1.shape != half2.shape:
        raise InputError(f"half map 2 shape {half2.shape} differs from half map 1 shape {half1.shape}")
    vs = tuple(float(v) for v in grid.voxel_size)
    identical = half1 is half2 or np.array_equal(half1, half2)
    out: dict = {"label": label, "shape": list(half1.shape), "voxel_size": list(vs), "halves_identical": identical,
                 "model": str(model) if model is not None else None, "variants": {v: {} for v in VARIANTS},
                 "honesty": {}, "notes": [], "files": {}, "timing_s": {}}
    curves: dict = {}
    raw = M.fsc(half1, half2, vs)
    curves["raw halves"] = raw
    out["half_fsc0.143_A"] = raw.resolution(0.143)
    if identical and not resolution:
        out["notes"].append("halves identical and no --resolution: resolution = Nyquist (FSC is 1 everywhere)")
    res = float(resolution) if resolution else out["half_fsc0.143_A"]
    out["resolution_used_A"] = res
    volumes = _variants(half1, half2, vs, enhanced, enhancer, resolution, out)
    if model is not None:
        t0 = time.perf_counter()
        _model_metrics(volumes, model, grid, res, curves, out)
        out["timing_s"]["model_metrics"] = time.perf_counter() - t0
    for key in ("enhanced_halves_fsc0.143_A", "enhanced_halves_fsc0.5_A", "max_fsc_gain_beyond_raw0.143",
                "noise_max_fsc_beyond_10A", "noise_chance_3sigma", "noise_output_rms_rel"):
        out["honesty"][key] = _nan()
    _honesty(half1, half2, volumes["average"], volumes["enhanced"], vs, raw, identical, enhancer, noise_test,
             seed, curves, out)
    out["curves"] = curves
    model_map_lp = out.pop("_model_map", None)
    if outdir is not None:
        write_outputs(out, Path(outdir), volumes, model_map_lp, plots=plots)
    out["timing_s"]["total"] = time.perf_counter() - t_start
    return out


def tsv_rows(result: dict) -> list[tuple[str, str, float]]:
    """``(variant, metric, value)`` rows: half-map scalars, per-variant metrics, honesty checks."""
    rows = [("half_maps", k, result[k]) for k in ("half_fsc0.143_A", "resolution_used_A", "bfactor_A2")]
    rows.append(("half_maps", "halves_identical", float(result["halves_identical"])))
    for name, values in result["variants"].items():
        rows.extend((name, k, v) for k, v in values.items())
    rows.extend(("honesty", k, v) for k, v in result["honesty"].items())
    return rows


def _fmt(v: float) -> str:
    return "NA" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def write_outputs(result: dict, outdir: Path, volumes: dict, model_map: np.ndarray | None, *,
                  plots: bool = True) -> None:
    """Write the TSVs, the JSON summary and (``plots``) the PNG figures into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    files = result["files"]
    path = outdir / "metrics.tsv"
    lines = ["variant\tmetric\tvalue"] + [f"{a}\t{b}\t{_fmt(c)}" for a, b, c in tsv_rows(result)]
    lines += [f"note\t{i}\t{n}" for i, n in enumerate(result["notes"])]
    path.write_text("\n".join(lines) + "\n")
    files["metrics"] = str(path)
    curves = result["curves"]
    first = next(iter(curves.values()))
    path = outdir / "fsc_curves.tsv"
    header = "freq_1_per_A\tresolution_A\t" + "\t".join(k.replace(" ", "_") for k in curves)
    body = [f"{f:.5f}\t{(1 / f if f > 0 else math.inf):.3f}\t" + "\t".join(f"{c.fsc[i]:.4f}" for c in curves.values())
            for i, f in enumerate(first.freq)]
    path.write_text("\n".join([header, *body]) + "\n")
    files["curves"] = str(path)
    summary = {k: v for k, v in result.items() if k != "curves"}
    (outdir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    files["summary"] = str(outdir / "summary.json")
    if plots:
        files.update(make_plots(result, outdir, volumes, model_map))


def make_plots(result: dict, outdir: Path, volumes: dict, model_map: np.ndarray | None) -> dict:
    """fsc_model.png (variants vs model), fsc_halves.png (honesty checks), slices.png."""
    from .plots import plot_fsc, plot_slices

    curves, label, files = result["curves"], result.get("label") or "", {}
    res = {"half-map 0.143": result["half_fsc0.143_A"]}
    model_curves = {k: v for k, v in curves.items() if "vs model" in k}
    if model_curves:
        styles = {k: ("--" if "unmasked" in k else "-") for k in model_curves}
        files["fsc_model_png"] = plot_fsc(model_curves, outdir / "fsc_model.png", styles=styles, marks=res,
                                          title=f"{label} FSC against the model map (solid: masked)".strip())
    half_curves = {k: v for k, v in curves.items() if "vs model" not in k}
    files["fsc_halves_png"] = plot_fsc(half_curves, outdir / "fsc_halves.png", marks=res,
                                       title=f"{label} model-free checks".strip())
    shown = dict(volumes)
    if model_map is not None:
        shown["model map (low-passed)"] = model_map
    files["slices_png"] = plot_slices(shown, outdir / "slices.png", title=label)
    return files


# ---------------------------------------------------------------------------------------- CLI


def add_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``deepemhancer evaluate``."""
    inp = parser.add_argument_group("Input")
    inp.add_argument("--half1", metavar="MAP", help="half map 1 (with --half2)")
    inp.add_argument("--half2", metavar="MAP", help="half map 2")
    inp.add_argument("--map", metavar="MAP", help="a single map instead of half maps (used as both halves)")
    inp.add_argument("--enhanced", metavar="MAP", help="enhanced map; without it the network is run here")
    inp.add_argument("--model", metavar="PDB/CIF", help="atomic model in the map's frame (map-model metrics)")
    inp.add_argument("--resolution", type=float, metavar="A",
                     help="resolution to use instead of the half-map FSC-0.143 (needed with --map)")
    out = parser.add_argument_group("Output")
    out.add_argument("--outdir", required=True, metavar="DIR", help="folder for metrics.tsv and the PNGs")
    out.add_argument("--label", default="", help="title for the figures")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    out.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    net = parser.add_argument_group("Network (enhancement and model-free checks)")
    net.add_argument("-p", "--processingType", dest="processing", default="tightTarget",
                     help="model: tightTarget (default), wideTarget, highRes")
    net.add_argument("--weights", metavar="PATH.pt", help="use these weights instead of -p")
    net.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="where the network runs (default auto: GPU when there is one)")
    net.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=None,
                     help="cubes per network call (default 8)")
    net.add_argument("--noise-test", action="store_true", help="enhance two pure-noise volumes and compare")
    net.add_argument("--seed", type=int, default=NOISE_SEED, help=f"noise-test seed (default {NOISE_SEED})")
    net.add_argument("--no-network", action="store_true",
                     help="with --enhanced: do not load the network; skip the model-free checks")


def _apply(enhancer: Enhancer, volume: np.ndarray, resolution: float | None) -> np.ndarray:
    """``enhancer(volume)``, passing the resolution limit to enhancers that take one."""
    if getattr(enhancer, "takes_resolution", False):
        return enhancer(volume, resolution=resolution)
    return enhancer(volume)


class NetworkEnhancer:
    """``volume -> enhanced volume`` for maps of one voxel size with a loaded network; ``resolution``
    (A) is the limit of :func:`pipeline.enhance` (None: ``config.resolution``)."""

    takes_resolution = True

    def __init__(self, config, voxel_size, loaded) -> None:
        self.config, self.voxel_size, self.loaded = config, voxel_size, loaded

    def __call__(self, volume: np.ndarray, resolution: float | None = None) -> np.ndarray:
        from .pipeline import enhance

        return enhance(volume, self.voxel_size, config=self.config, model=self.loaded, resolution=resolution)


def make_enhancer(config, voxel_size, *, loaded=None) -> NetworkEnhancer:
    """Return an enhancer for maps of ``voxel_size``, loading the network once (or reusing ``loaded``
    from ``pipeline.load``)."""
    from .pipeline import load

    loaded = loaded or load(config)
    if getattr(loaded.card, "is_placeholder", False):
        log.warning("evaluating RANDOM-WEIGHTS placeholder model %s", getattr(loaded.card, "name", "?"))
    return NetworkEnhancer(config, voxel_size, loaded)


def _read_inputs(args: argparse.Namespace):
    from .io import check_same_grid, read_map

    if args.map and (args.half1 or args.half2):
        raise InputError("give either --map or --half1/--half2, not both")
    if args.map:
        vol, grid = read_map(args.map, what="map")
        return vol, vol, grid
    if not (args.half1 and args.half2):
        raise InputError("give --half1 and --half2, or --map")
    h1, grid = read_map(args.half1, what="half map 1")
    h2, grid2 = read_map(args.half2, what="half map 2")
    check_same_grid(grid, grid2, f"half map 1 ({args.half1})", f"half map 2 ({args.half2})")
    return h1, h2, grid


def run(args: argparse.Namespace) -> int:
    """Run ``deepemhancer evaluate``; returns the exit code."""
    from .config import EnhanceConfig, InferenceConfig
    from .io import read_map

    h1, h2, grid = _read_inputs(args)
    enhanced = None
    if args.enhanced:
        enhanced, egrid = read_map(args.enhanced, what="enhanced map")
        if tuple(egrid.shape) != tuple(grid.shape):
            raise InputError(f"{args.enhanced}: enhanced map shape {egrid.shape} differs from input {grid.shape}")
        if not np.allclose(egrid.voxel_size, grid.voxel_size, rtol=1e-4):
            log.warning("%s: voxel size %s differs from the input's %s", args.enhanced, egrid.voxel_size,
                        grid.voxel_size)
    if args.no_network and enhanced is None:
        raise InputError("--no-network needs --enhanced")
    enhancer = None
    if not args.no_network:
        config = EnhanceConfig(model=args.processing, weights=Path(args.weights) if args.weights else None,
                               inference=InferenceConfig(device=args.device, batch_size=args.batch_size))
        enhancer = make_enhancer(config, grid.voxel_size)
    result = evaluate(h1, h2, grid, enhanced=enhanced, enhancer=enhancer, model=args.model, outdir=args.outdir,
                      noise_test=args.noise_test, resolution=args.resolution, seed=args.seed,
                      label=args.label, plots=not args.no_plots)
    log.info("\n%s", format_summary(result))
    return 0


def format_summary(result: dict) -> str:
    """A short human-readable table of the main numbers."""
    lines = [f"half-map FSC-0.143: {_fmt(result['half_fsc0.143_A'])} A; resolution used "
             f"{_fmt(result['resolution_used_A'])} A; Guinier B {_fmt(result['bfactor_A2'])} A^2",
             "variant     FSC0.5 masked  unmasked  CC_mask  CC_box"]
    for name, v in result["variants"].items():
        lines.append(f"{name:<11} {_fmt(v['fsc0.5_masked_A']):>13} {_fmt(v['fsc0.5_unmasked_A']):>9} "
                     f"{_fmt(v['cc_mask']):>8} {_fmt(v['cc_box']):>7}")
    lines += [f"{k}: {_fmt(v)}" for k, v in result["honesty"].items()]
    lines += [f"note: {n}" for n in result["notes"]] + [f"wrote {p}" for p in result["files"].values()]
    return "\n".join(lines)
