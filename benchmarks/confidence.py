"""Confidence-map benchmark: does the confidence (``deepemhancer --confidence``) say where the enhanced map is right?

Simulated pairs (``deepemhancer_engine.training.simulate.simulate_pair``, through ``quality.simulated_pairs``):
held-out structures of ``split_eval.txt`` with the evaluation seeds (>= 10,000,000) for the measurement; with
``--tune``, structures of ``split_train.txt`` with seeds >= 20,000,000 to choose the method's parameters.
Pseudo-ligands and the micelle belt are left to the simulator's draw. Per pair, the half maps are enhanced with
the confidence map exactly as the command line does (``pipeline.enhance_with_confidence``), then:

- the molecule (the pair's tight model mask) is cut into 7 A blocks; per block the mean confidence and the local
  CC of the enhanced map with the model map; their Spearman correlation, next to the naive answer (the local CC
  of the two raw halves per block, ``confidence.calibration``); gate: median over pairs >= 0.6 and >= naive + 0.1;
- the simulator's smeared and low-occupancy patches (spheres recorded in ``pair.info``): median confidence in
  the patches / in the rest of the molecule (the rigid core); gate: median over pairs with patches <= 0.6;
- pure-noise halves (two independent coloured-noise volumes per case, the network run on every cube: the
  run's skipped-cube count is recorded): median confidence in the box; gate <= 0.1;
- reported, not gated: confidence at pseudo-ligand atoms, in the micelle belt, and against d_half.

    python benchmarks/confidence.py --tune --limit 8                  # choose parameters (train split)
    python benchmarks/confidence.py --limit 12                        # the held-out measurement
    python benchmarks/confidence.py --limit 2 --noise 1 --outdir /tmp/c   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import EVAL_SEED, SHARED, simulated_pairs  # noqa: E402

from deepemhancer_engine.confidence import (  # noqa: E402
    BLOCK_EDGE,
    DEFAULT_PARAMS,
    ConfidenceParams,
    calibration,
    confidence_map,
)

log = logging.getLogger("confidence")
TUNE_SEED = 20_000_000
NOISE_SEED = 30_000_000
NOISE_SPECTRA = ("falling", "flat", "rising_rolloff")
GRID = {"window": (0.5, 0.6, 0.8), "snr_half": (10.0, 30.0, 100.0), "sigmas": (2.0, 3.0)}
#: The tuning rule (confidence_report.chosen): among the settings whose pure-noise median stays under TUNE_NOISE,
#: whose rigid core's median confidence is at least TRUSTED (a reproducible core is called trusted) and whose
#: median Spearman is at least TUNE_SPEARMAN, the smallest patch ratio. TUNE_SPEARMAN: the previous definition's
#: (Fisher-z scale, window 0.6 d, 3 sigmas) median Spearman on the 14 tuning pairs (docs/design.md).
TUNE_NOISE = 0.05
TUNE_SPEARMAN = 0.484


@dataclasses.dataclass
class Run:
    """One enhanced pair with everything the figures need (the enhanced halves kept for tuning)."""

    name: str
    seed: int
    voxel: float
    d_half: float
    enhanced: np.ndarray
    halves: tuple[np.ndarray, np.ndarray]
    raw: tuple[np.ndarray, np.ndarray] | None
    model_map: np.ndarray | None
    molecule: np.ndarray | None
    regions: dict
    skipped: int
    cubes: int
    seconds: float


def _sphere(shape, voxel: float, origin, centre, radius: float) -> np.ndarray:
    z, y, x = (np.arange(n) * voxel + origin[i] for n, i in zip(shape, (2, 1, 0)))
    return ((z[:, None, None] - centre[2]) ** 2 + (y[None, :, None] - centre[1]) ** 2
            + (x[None, None, :] - centre[0]) ** 2) < radius**2


def regions(pair) -> dict:
    """Voxel masks of the molecule's smeared and weak patches, its rigid core (the rest), the pseudo-ligand
    atoms and the micelle belt (noise-free density outside the wide mask above a tenth of the protein's)."""
    shape, vs, org = pair.half1.shape, pair.voxel_size[0], pair.origin
    molecule = pair.tight_mask > 0.5
    out = {}
    for kind in ("smeared", "weak"):
        m = np.zeros(shape, bool)
        for centre, radius in pair.info.get(kind, []):
            m |= _sphere(shape, vs, org, centre, radius)
        out[kind] = m & molecule
    out["core"] = molecule & ~_grow(out["smeared"] | out["weak"], vs, 3.0)
    lig = np.zeros(shape, bool)
    for xyz in pair.info.get("ligand_xyz", []):
        idx = tuple(int(round((xyz[i] - org[i]) / vs)) for i in (2, 1, 0))
        if all(0 <= j < n for j, n in zip(idx, shape)):
            lig[idx] = True
    out["ligand"] = lig
    if pair.info.get("micelle"):
        level = float(pair.signal[molecule].mean())
        outside = pair.wide_mask < 0.01
        out["micelle"] = outside & (pair.signal > np.median(pair.signal[outside]) + 0.1 * level)
    return out


def _grow(mask: np.ndarray, voxel: float, margin_A: float) -> np.ndarray:
    from scipy import ndimage

    n = max(1, round(margin_A / voxel))
    return ndimage.binary_dilation(mask, iterations=n) if mask.any() else mask


def enhance_run(name, seed, half1, half2, vs, loaded, config, *, pair=None, keep_raw=True) -> Run:
    from deepemhancer_engine.pipeline import enhance_with_confidence

    t0 = time.perf_counter()
    cubes = skipped = 0
    found = enhance_with_confidence(half1, half2, vs, config=config, model=loaded, keep_halves=True)
    cubes += int(loaded.timings.get("cubes", 0))
    skipped += int(loaded.timings.get("skipped", 0))
    return Run(name=name, seed=seed, voxel=float(vs), d_half=found.resolution, enhanced=found.enhanced,
               halves=found.halves, raw=(half1, half2) if keep_raw else None,
               model_map=None if pair is None else pair.model_map,
               molecule=None if pair is None else pair.tight_mask > 0.5,
               regions={} if pair is None else regions(pair), skipped=skipped, cubes=cubes,
               seconds=time.perf_counter() - t0)


def save_run(run: Run, path: Path) -> None:
    arrays = {"enhanced": run.enhanced, "e1": run.halves[0], "e2": run.halves[1]}
    if run.raw is not None:
        arrays.update(h1=run.raw[0], h2=run.raw[1])
    if run.model_map is not None:
        arrays.update(model_map=run.model_map, molecule=run.molecule)
    arrays.update({f"region_{k}": v for k, v in run.regions.items()})
    meta = {k: getattr(run, k) for k in ("name", "seed", "voxel", "d_half", "skipped", "cubes", "seconds")}
    np.savez(path, meta=json.dumps(meta), **arrays)


def load_run(path: Path) -> Run:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    regions = {k[len("region_"):]: z[k] for k in z.files if k.startswith("region_")}
    return Run(enhanced=z["enhanced"], halves=(z["e1"], z["e2"]),
               raw=(z["h1"], z["h2"]) if "h1" in z.files else None,
               model_map=z["model_map"] if "model_map" in z.files else None,
               molecule=z["molecule"] if "molecule" in z.files else None, regions=regions, **meta)


def score(run: Run, params: ConfidenceParams, *, conf: np.ndarray | None = None) -> dict:
    """The figures of one pair for one parameter set."""
    if conf is None:
        conf = confidence_map(*run.halves, run.voxel, run.d_half, params)
    row = {"case": run.name, "seed": run.seed, "voxel": run.voxel, "d_half": run.d_half}
    if run.model_map is None:  # pure noise
        edge = max(2, round(BLOCK_EDGE / run.voxel))
        from deepemhancer_engine.confidence import block_cc

        row.update(noise_median=float(np.median(conf)), noise_p95=float(np.percentile(conf, 95)),
                   noise_naive_median=float(np.median(block_cc(*run.raw, edge))), skipped=run.skipped,
                   cubes=run.cubes)
        return row
    cal = calibration(conf, run.enhanced, run.model_map, run.molecule, run.voxel, halves=run.raw)
    row.update(cal.values())
    core = float(np.median(conf[run.regions["core"]]))
    row["core"] = core
    patch = run.regions["smeared"] | run.regions["weak"]
    for key, mask in (("smeared", run.regions["smeared"]), ("weak", run.regions["weak"]), ("patches", patch),
                      ("ligand", run.regions["ligand"]), ("micelle", run.regions.get("micelle"))):
        ok = mask is not None and np.count_nonzero(mask) >= 5
        row[key] = float(np.median(conf[mask])) if ok else float("nan")
    row["patch_ratio"] = row["patches"] / core if core > 0 else float("nan")
    row["molecule_median"] = float(np.median(conf[run.molecule]))
    row["solvent_median"] = float(np.median(conf[~_grow(run.molecule, run.voxel, 5.0)]))
    return row


def noise_run(k: int, shape, vs: float, loaded, config) -> Run:
    """Pure-noise case ``k``: two independent coloured-noise halves (spectra in turn) of ``shape``."""
    from deepemhancer_engine.noisegen import coloured_noise

    spectrum = NOISE_SPECTRA[k % len(NOISE_SPECTRA)]
    h1 = coloured_noise(shape, vs, spectrum, NOISE_SEED + 2 * k)
    h2 = coloured_noise(shape, vs, spectrum, NOISE_SEED + 2 * k + 1)
    run = enhance_run(f"noise-{spectrum}", NOISE_SEED + 2 * k, h1, h2, vs, loaded, config.every_cube())
    if run.skipped:
        raise RuntimeError(f"noise case {k}: {run.skipped} cubes were skipped; the check must run every cube")
    return run


def _cached(cache: Path | None, key: str, make) -> Run:
    if cache is None:
        return make()
    path = cache / f"{key}.npz"
    if path.exists():
        return load_run(path)
    run = make()
    save_run(run, path)
    return run


def summarise(rows: list[dict]) -> dict:
    sim = [r for r in rows if "spearman" in r]
    noise = [r for r in rows if "noise_median" in r]
    ratios = [r["patch_ratio"] for r in sim if np.isfinite(r.get("patch_ratio", np.nan))]
    med = lambda key, rs: float(np.nanmedian([r[key] for r in rs])) if rs else float("nan")  # noqa: E731
    return {"cases": len(sim), "spearman": med("spearman", sim), "naive_spearman": med("naive_spearman", sim),
            "patch_cases": len(ratios), "patch_ratio": float(np.median(ratios)) if ratios else float("nan"),
            "core": med("core", sim), "noise_cases": len(noise), "noise_median": med("noise_median", noise),
            "noise_naive_median": med("noise_naive_median", noise),
            "noise_skipped": int(sum(r["skipped"] for r in noise))}


def tune(runs: list[Run]) -> list[dict]:
    table = []
    for values in itertools.product(*GRID.values()):
        params = ConfidenceParams(**dict(zip(GRID, values)))
        rows = [score(r, params) for r in runs]
        table.append({**dataclasses.asdict(params), **summarise(rows)})
        log.info("%s", table[-1])
    return table


def load(args):
    from deepemhancer_engine.config import EnhanceConfig, InferenceConfig
    from deepemhancer_engine.pipeline import load as load_model

    config = EnhanceConfig(model=args.processing, weights=Path(args.weights) if args.weights else None,
                           inference=InferenceConfig(device=args.device))
    return config, load_model(config)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tune", action="store_true", help="train split, seeds >= 20,000,000: parameter grid")
    ap.add_argument("--limit", type=int, default=12, help="simulated pairs (default 12)")
    ap.add_argument("--noise", type=int, default=3, help="pure-noise cases (default 3)")
    ap.add_argument("--max-box", type=float, default=96.0, help="largest box (A), as quality.py")
    ap.add_argument("--weights", help="weights .pt (card beside it); default: the registry model of -p")
    ap.add_argument("-p", "--processingType", dest="processing", default="tightTarget")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--outdir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--structures", default=str(SHARED / "structures"))
    ap.add_argument("--cache", help="folder keeping each pair's enhanced maps (.npz): reruns reuse them")
    ap.add_argument("--from-cache", action="store_true", help="only the pairs already in --cache (no simulation)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("deepemhancer_engine",):
        logging.getLogger(name).setLevel(logging.WARNING)
    config, loaded = load(args)
    split, seed0 = ("split_train.txt", TUNE_SEED) if args.tune else ("split_eval.txt", EVAL_SEED)
    cache = Path(args.cache) if args.cache else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.from_cache:
        runs = [load_run(p) for p in sorted(cache.glob("*.npz"))]
        return finish(args, runs, loaded, split, seed0, t0)
    runs = []
    pairs = simulated_pairs(args.limit, Path(args.structures), args.max_box, split=split, seed0=seed0, ligands=None)
    for name, _path, seed, pair in pairs:
        runs.append(_cached(cache, f"{seed}", lambda: enhance_run(
            name, seed, pair.half1, pair.half2, pair.voxel_size[0], loaded, config, pair=pair)))
        log.info("%s: %s", name, {k: v for k, v in score(runs[-1], DEFAULT_PARAMS).items()})
    shape = runs[0].enhanced.shape if runs else (96, 96, 96)
    for k in range(args.noise):
        runs.append(_cached(cache, f"noise{k}", lambda: noise_run(k, shape, runs[0].voxel if runs else 1.0,
                                                                  loaded, config)))
    return finish(args, runs, loaded, split, seed0, t0)


def finish(args, runs: list[Run], loaded, split: str, seed0: int, t0: float) -> int:
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    meta = {"split": split, "seed0": seed0, "weights": str(loaded.weights_path), "seconds": time.perf_counter() - t0,
            "argv": " ".join(sys.argv[1:]), "params": str(DEFAULT_PARAMS)}
    if args.tune:
        table = tune(runs)
        (outdir / "confidence_tuning.json").write_text(json.dumps({"meta": meta, "grid": table}, indent=1))
        from confidence_report import write_tuning

        write_tuning(outdir / "confidence_tuning.md", table, meta, TUNE_NOISE, TUNE_SPEARMAN)
        return 0
    rows = [score(r, DEFAULT_PARAMS) for r in runs]
    from confidence_report import write_report

    write_report(outdir, rows, summarise(rows), runs, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
