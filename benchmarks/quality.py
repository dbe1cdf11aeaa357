"""Quality benchmark: ``deepemhancer evaluate`` on held-out simulated pairs, real maps and a noise grid.

(i) Simulated pairs from ``../shared/structures/split_eval.txt`` (structures never trained on), made by
``deepemhancer_engine.training.simulate.simulate_pair`` with evaluation seeds >= 10,000,000 (training
uses smaller seeds), no pseudo-ligands (so the model file is the whole model), skipping structures
the simulator would crop. The pair's noise-free signal runs the in-band honesty check.

(ii) Every map in ``../shared/real_maps`` with an atomic model, as a user runs it: the whole map as it
is (no crop), one map, ``enhance`` with the default configuration -- for a single map that means no
resolution limit -- is the "enhanced" variant; the same map enhanced with ``resolution`` = the nominal
resolution is scored beside it ("enh@d"). Low-pass, sharpening, CC_mask and LocScale use the nominal
resolution. These maps have no half maps: the independent-halves and in-band checks do not apply.

(iii) The noise grid (``deepemhancer_engine.noisegen.noise_test_grid``: 4 spectra x 3 voxel sizes x 2
seeds): per case two independent coloured-noise volumes of ``--noise-edge`` voxels, enhanced with no
resolution limit and no mask, compared beyond 10 A (``evaluate.noise_case``), every cube run (a noise
volume has no molecule: solvent-cube skipping would skip it all). The evaluate noise test runs every cube
too; everything else is enhanced as a user's run is, solvent cubes skipped.

Writes into ``--outdir`` (default ``benchmarks/results``): ``quality.md`` (tables + figures, made by
``quality_report.py``), ``quality.tsv`` (one row per case), ``noise_grid.tsv`` and ``cases/<case>/``
(metrics.tsv, fsc_curves.tsv, summary.json; PNGs for the first cases of each set). Parts are selectable::

    python benchmarks/quality.py --weights path/to/tightTarget.pt [--limit 12] [--device cpu]
    python benchmarks/quality.py --limit 2 --real-limit 1 --noise-grid-limit 2 --outdir /tmp/q   # smoke run
    python benchmarks/quality.py --noise-grid-only --outdir /tmp/noise
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deepemhancer_engine.evaluate import (  # noqa: E402
    MODEL_METRICS,
    EvaluationResult,
    NoiseCaseResult,
    evaluate,
    make_enhancer,
    model_metrics,
    noise_case,
)
from deepemhancer_engine.io import GridInfo, read_map  # noqa: E402

log = logging.getLogger("quality")
SHARED = ROOT.parent / "shared"
EVAL_SEED = 10_000_000
#: Nominal resolutions (A) of the real maps, from shared/real_maps/SOURCES.md ("assumed" where it says
#: "lower" / unknown).
NOMINAL = {
    "emd3488_hemoglobin": 3.2, "emd11007_sarscov2_rdrp_crop": 2.9, "emd21457_spike_ntd_segment": 3.2,
    "emd2566_mitoribosome_3j6b_chain9": 3.2, "emd0093_hcn4_6gyn": 3.4, "emd5778_trpv1_transmem": 3.4,
    "emd_5168": 6.6, "emd_5168_monomer": 6.6, "emd_5170": 8.0,
}
#: Name of the real maps' nominal-resolution run (an ``extra`` map of evaluate).
NOMINAL_RUN = "enhanced_nominal"
#: Largest solvent margin (A) the simulator puts on each side of the model (training/simulate.py).
SIM_MAX_PAD = 23.0
MAP_EXT = (".mrc", ".map", ".mrc.gz", ".map.gz")
MODEL_EXT = (".pdb", ".cif", ".ent", ".pdb.gz", ".cif.gz", ".ent.gz")


@dataclasses.dataclass
class Case:
    name: str
    kind: str  # "simulated" | "real"
    half1: np.ndarray
    half2: np.ndarray
    grid: GridInfo
    model: Path
    resolution: float | None = None
    note: str = ""
    target: np.ndarray | None = None  # simulated cases: the training target of this pair (the ceiling)
    signal: np.ndarray | None = None  # simulated cases: the noise-free map the halves share (in-band check)


@dataclasses.dataclass
class Scored:
    """One case's evaluation and, for simulated cases, its training target scored like the maps (the
    ceiling: :data:`MODEL_METRICS` of what a network that learnt its target perfectly would return)."""

    result: EvaluationResult
    ceiling: dict[str, float] | None = None

    def values(self, variant: str) -> dict[str, float]:
        """:data:`MODEL_METRICS` of a variant, an extra map (the nominal run) or ``"target"``; NaN if absent."""
        found = (self.ceiling if variant == "target" else self.result.variants.get(variant)
                 or (self.result.extra_variants or {}).get(variant))
        return found or dict.fromkeys(MODEL_METRICS, float("nan"))


def simulated_cases(limit: int, structures: Path, max_box: float, target: str = "tightTarget"):
    """Yield up to ``limit`` simulated held-out cases in boxes of at most ``max_box`` A (lazy simulator)."""
    for name, path, seed, pair in simulated_pairs(limit, structures, max_box):
        grid = GridInfo(shape=pair.half1.shape, voxel_size=tuple(pair.voxel_size), origin=tuple(pair.origin))
        note = f"seed {seed}, {pair.voxel_size[0]:.2f} A/px" + (", micelle" if pair.info.get("micelle") else "")
        yield Case(name, "simulated", pair.half1, pair.half2, grid, path, note=note,
                   target=pair.targets[target], signal=pair.signal)


def simulated_pairs(limit: int, structures: Path, max_box: float, *, split: str = "split_eval.txt",
                    seed0: int = EVAL_SEED, ligands: bool | None = False, local_target: bool = False):
    """Yield ``(name, path, seed, SimulatedPair)`` for up to ``limit`` structures of ``split`` that fit in
    ``max_box`` A uncropped, the k-th structure of the list with seed ``seed0 + k`` (held-out pairs: split_eval,
    seeds from :data:`EVAL_SEED`; ``ligands`` forces pseudo-ligands on or off, None = the simulator's draw)."""
    try:
        from deepemhancer_engine.training.simulate import load_atoms, sample_resolution_and_voxel, simulate_pair
    except ImportError as err:
        raise SystemExit(f"the simulator deepemhancer_engine.training.simulate is not available ({err}); "
                         "run with --no-sim to benchmark the real maps only") from None
    names = (structures / split).read_text().split()
    done = 0
    for k, name in enumerate(names):
        if done >= limit:
            break
        try:
            atoms = load_atoms(str(structures / name))
        except Exception as err:  # noqa: BLE001 - one unreadable file must not stop the benchmark
            log.warning("skip %s: %s", name, err)
            continue
        if float((atoms.pos.max(0) - atoms.pos.min(0)).max()) + 2 * SIM_MAX_PAD > max_box:
            continue  # the simulator would crop it to fit the box
        path = structures / name
        seed = seed0 + k
        res, voxel = sample_resolution_and_voxel(np.random.default_rng(seed))
        pair = simulate_pair(path, seed, resolution=res, voxel_size=voxel, max_box=int(max_box / voxel) // 2 * 2,
                             ligands=ligands, local_target=local_target)
        n_file = len(atoms.pos)
        if pair.info.get("n_atoms", n_file) < n_file:
            log.info("skip %s: the simulator cropped it (%d of %d atoms)", name, pair.info["n_atoms"], n_file)
            continue
        done += 1
        yield Path(name).name.split("__")[0], path, seed, pair


def real_cases(real_dir: Path, match: str | None = None):
    """Every map with an atomic model in ``real_dir`` (whose name contains ``match``), whole (no crop), as one
    map (used as both halves)."""
    for d in sorted(p for p in real_dir.iterdir() if p.is_dir()):
        models = sorted(p for p in d.iterdir() if p.name.lower().endswith(MODEL_EXT))
        maps = sorted(p for p in d.iterdir() if p.name.lower().endswith(MAP_EXT) and "mask" not in p.name.lower())
        if not models:
            continue
        for mp in maps:
            stem = mp.name.split(".")[0]
            name = stem if len(maps) > 1 else d.name
            if match and match not in name:
                continue
            res = NOMINAL.get(name, NOMINAL.get(d.name))
            if res is None:  # without a nominal resolution the "nominal" run would repeat the default one
                log.warning("skip %s: no nominal resolution in NOMINAL (add it from SOURCES.md)", name)
                continue
            vol, grid = read_map(mp, what="map")
            note = (f"{mp.name} + {models[0].name}, {'x'.join(map(str, vol.shape[::-1]))} x "
                    f"{grid.voxel_size[0]:.3g} A")
            yield Case(name, "real", vol, vol, grid, models[0], resolution=res, note=note)


def _evaluate_case(case: Case, index: int, enhancer, outdir: Path, args, serial: int) -> Scored:
    """Evaluate one case. Real maps: the default run (no resolution limit) is the enhanced variant, the run at
    the nominal resolution an extra map scored beside it."""
    enhanced, extra = None, None
    if case.kind == "real":
        t0 = time.perf_counter()
        enhanced = enhancer(case.half1, resolution=None)  # as `deepemhancer -i map` runs: config.resolution, None
        extra = {NOMINAL_RUN: enhancer(case.half1, resolution=case.resolution)}
        log.info("  enhanced (default and at %s A) in %.0f s", case.resolution, time.perf_counter() - t0)
    res = evaluate(case.half1, case.half2, case.grid, enhanced=enhanced, enhancer=enhancer, model=case.model,
                   outdir=outdir / "cases" / case.name, noise_test=index < args.noise_cases,
                   resolution=case.resolution, label=f"{case.name} ({case.kind})", plots=index < args.plot_cases,
                   seed=EVAL_SEED + 500_000 + serial, signal=case.signal, extra=extra)
    ceiling = None
    if case.target is not None:
        ceiling = model_metrics({"target": case.target}, case.model, case.grid, res.resolution_used_A)["target"]
    res.model_map = None  # free memory
    return Scored(res, ceiling)


def run_cases(sources, config, loaded, outdir: Path, args) -> tuple[list[Case], list[Scored]]:
    """Evaluate every case (noise test and PNGs for the first cases of each set), freeing its maps after."""
    cases, results = [], []
    for source in sources:
        for i, case in enumerate(source):
            log.info("[%d] case %s (%s): %s", len(cases) + 1, case.name, case.kind, case.note)
            enhancer = make_enhancer(config, case.grid.voxel_size, loaded=loaded)
            results.append(_evaluate_case(case, i, enhancer, outdir, args, len(cases)))
            log.info("[%d] case %s done in %.0f s (%s)", len(cases) + 1, case.name,
                     results[-1].result.timing_s["total"],
                     ", ".join(f"{k} {v:.0f} s" for k, v in results[-1].result.timing_s.items() if k != "total"))
            cases.append(case)
            case.half1 = case.half2 = case.target = case.signal = None  # free memory
    return cases, results


def run_noise_grid(config, loaded, limit: int | None, edge: int) -> list[NoiseCaseResult]:
    """The noise grid's cases (the first ``limit``), each enhanced with the default configuration and no
    resolution limit (``resolution=None``; the benchmark's config has none) and no mask."""
    from deepemhancer_engine.noisegen import noise_test_grid

    grid = noise_test_grid()[:limit]
    found = []
    for k, case in enumerate(grid, 1):
        enhancer = make_enhancer(config, (case.voxel_size,) * 3, loaded=loaded)
        r = noise_case(enhancer, case, edge)
        log.info("[noise %d/%d] %s: max FSC beyond 10 A %.3f (3 sigma %.3f) %s in %.0f s", k, len(grid), r.name,
                 r.max_fsc_beyond_10A, r.chance_3sigma, "pass" if r.passed else "FAIL", r.seconds)
        found.append(r)
    return found


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="weights .pt (card beside it); default: the registry model of -p")
    ap.add_argument("-p", "--processingType", dest="processing", default="tightTarget")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--limit", type=int, default=12, help="simulated cases (default 12)")
    ap.add_argument("--real-limit", type=int, default=None, help="at most this many real maps")
    ap.add_argument("--real-match", default=None, metavar="TEXT", help="only real maps whose name contains TEXT")
    ap.add_argument("--noise-grid-limit", type=int, default=None, help="only the first N noise-grid cases")
    ap.add_argument("--noise-edge", type=int, default=96, help="noise-grid box edge in voxels (at least 96)")
    ap.add_argument("--max-box", type=float, default=96.0,
                    help="simulated box edge limit in A (default 96: 2x2x2 cubes at 1 A); structures that would "
                         "be cropped are skipped")
    ap.add_argument("--noise-cases", type=int, default=100,
                    help="run evaluate's white-noise test on the first N cases of each set")
    ap.add_argument("--plot-cases", type=int, default=1, help="write PNGs for the first N cases of each set")
    ap.add_argument("--no-sim", action="store_true", help="skip the simulated pairs")
    ap.add_argument("--no-real", action="store_true", help="skip the real maps")
    ap.add_argument("--no-noise-grid", action="store_true", help="skip the noise grid")
    ap.add_argument("--noise-grid-only", action="store_true", help="only the noise grid")
    ap.add_argument("--outdir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--structures", default=str(SHARED / "structures"))
    ap.add_argument("--real-maps", default=str(SHARED / "real_maps"))
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("deepemhancer_engine",):  # one progress line per case, not one per pipeline stage
        logging.getLogger(name).setLevel(logging.WARNING)

    from quality_report import write_reports

    from deepemhancer_engine.config import EnhanceConfig, InferenceConfig
    from deepemhancer_engine.pipeline import load

    config = EnhanceConfig(model=args.processing, weights=Path(args.weights) if args.weights else None,
                           inference=InferenceConfig(device=args.device))
    loaded = load(config)  # fail early on missing weights
    outdir = Path(args.outdir)
    (outdir / "cases").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cases, results = run_cases(_sources(args), config, loaded, outdir, args)
    noise = [] if args.no_noise_grid else run_noise_grid(config, loaded, args.noise_grid_limit, args.noise_edge)
    seconds = time.perf_counter() - t0
    write_reports(outdir, cases, results, noise, args, loaded.card, seconds)
    return 0


def _sources(args) -> list:
    """The case generators asked for: simulated held-out pairs, then real maps."""
    sources = []
    if not (args.no_sim or args.noise_grid_only):
        target = "wideTarget" if args.processing == "wideTarget" else "tightTarget"
        sources.append(simulated_cases(args.limit, Path(args.structures), args.max_box, target))
    if not (args.no_real or args.noise_grid_only):
        real = real_cases(Path(args.real_maps), args.real_match)
        sources.append(real if args.real_limit is None else (c for _, c in zip(range(args.real_limit), real)))
    return sources


if __name__ == "__main__":
    raise SystemExit(main())
