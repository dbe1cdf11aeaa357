"""Quality benchmark: ``deepemhancer evaluate`` on held-out simulated pairs and on real maps.

(i) Simulated pairs from ``../shared/structures/split_eval.txt`` (structures never trained on), made by
``deepemhancer_engine.training.simulate.simulate_pair`` with evaluation seeds >= 10,000,000 (training
uses smaller seeds), no pseudo-ligands (so the model file is the whole model), skipping structures
the simulator would crop. (ii) Every map in ``../shared/real_maps`` with an atomic model; those have
no half maps, so the map is used as both halves (the independent-halves check does not apply) and
the nominal resolution is used for low-pass, sharpening and CC_mask. Real maps larger than
``--max-box`` A are cropped around the model centre (origin kept consistent).

Writes ``benchmarks/results/quality.md`` (tables + figures), ``quality.tsv`` (one row per case) and
``cases/<case>/`` (metrics.tsv, fsc_curves.tsv, summary.json; PNGs for the first cases of each set).

    python benchmarks/quality.py --weights path/to/tightTarget.pt [--limit 12] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepemhancer_engine.evaluate import (  # noqa: E402
    HONESTY_KEYS,
    MODEL_METRICS,
    VARIANTS,
    EvaluationResult,
    evaluate,
    make_enhancer,
    model_metrics,
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


@dataclasses.dataclass
class Scored:
    """One case's evaluation and, for simulated cases, its training target scored like the maps (the
    ceiling: :data:`MODEL_METRICS` of what a network that learnt its target perfectly would return)."""

    result: EvaluationResult
    ceiling: dict[str, float] | None = None


def simulated_cases(limit: int, structures: Path, max_box: float, target: str = "tightTarget"):
    """Yield up to ``limit`` simulated held-out cases in boxes of at most ``max_box`` A (lazy simulator)."""
    try:
        from deepemhancer_engine.training.simulate import load_atoms, sample_resolution_and_voxel, simulate_pair
    except ImportError as err:
        raise SystemExit(f"the simulator deepemhancer_engine.training.simulate is not available ({err}); "
                         "run with --no-sim to benchmark the real maps only") from None
    names = (structures / "split_eval.txt").read_text().split()
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
        seed = EVAL_SEED + k
        res, voxel = sample_resolution_and_voxel(np.random.default_rng(seed))
        pair = simulate_pair(path, seed, resolution=res, voxel_size=voxel, max_box=int(max_box / voxel) // 2 * 2,
                             ligands=False)
        n_file = len(atoms.pos)
        if pair.info.get("n_atoms", n_file) < n_file:
            log.info("skip %s: the simulator cropped it (%d of %d atoms)", name, pair.info["n_atoms"], n_file)
            continue
        grid = GridInfo(shape=pair.half1.shape, voxel_size=tuple(pair.voxel_size), origin=tuple(pair.origin))
        note = f"seed {seed}, {pair.voxel_size[0]:.2f} A/px" + (", micelle" if pair.info.get("micelle") else "")
        done += 1
        yield Case(Path(name).name.split("__")[0], "simulated", pair.half1, pair.half2, grid, path, note=note,
                   target=pair.targets[target])


def _crop_around_model(vol, grid: GridInfo, model: Path, max_box: float):
    """Crop to at most ``max_box`` A per axis around the model centre; returns (vol, grid, note)."""
    from deepemhancer_engine.modelmap import atom_positions

    limit = [max(16, int(max_box / v)) for v in grid.voxel_size[::-1]]  # z, y, x voxels
    if all(n <= lim for n, lim in zip(vol.shape, limit)):
        return vol, grid, ""
    idx, _ = atom_positions(model, grid)
    centre = np.clip(np.median(idx, axis=0), 0, np.asarray(vol.shape) - 1)
    lo = [int(min(max(0, round(c - m / 2)), max(0, n - m))) for c, m, n in zip(centre, limit, vol.shape)]
    sl = tuple(slice(a, a + min(m, n)) for a, m, n in zip(lo, limit, vol.shape))
    out = np.ascontiguousarray(vol[sl])
    origin = tuple(o + lo_i * v for o, lo_i, v in zip(grid.effective_origin, lo[::-1], grid.voxel_size))
    new = GridInfo(shape=out.shape, voxel_size=tuple(grid.voxel_size), origin=origin)
    return out, new, f"cropped {'x'.join(map(str, vol.shape[::-1]))} -> {'x'.join(map(str, out.shape[::-1]))}"


def real_cases(real_dir: Path, max_box: float):
    """Every map with an atomic model in ``real_dir`` (map used as both halves)."""
    for d in sorted(p for p in real_dir.iterdir() if p.is_dir()):
        models = sorted(p for p in d.iterdir() if p.name.lower().endswith(MODEL_EXT))
        maps = sorted(p for p in d.iterdir() if p.name.lower().endswith(MAP_EXT) and "mask" not in p.name.lower())
        if not models:
            continue
        for mp in maps:
            stem = mp.name.split(".")[0]
            name = stem if len(maps) > 1 else d.name
            res = NOMINAL.get(name, NOMINAL.get(d.name))
            vol, grid = read_map(mp, what="map")
            vol, grid, note = _crop_around_model(vol, grid, models[0], max_box)
            note = f"{mp.name} + {models[0].name}, {grid.voxel_size[0]:.3g} A/px" + (f", {note}" if note else "")
            yield Case(name, "real", vol, vol, grid, models[0], resolution=res, note=note)


def _f(v, digits=2) -> str:
    return "NA" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _triple(variants: dict, key: str, digits: int = 2) -> str:
    return " / ".join(_f(variants[v][key], digits) for v in VARIANTS)


def case_row(case: Case, scored: Scored) -> dict:
    """One row of quality.tsv: the half-map numbers, every variant's metrics, the honesty checks, the ceiling."""
    res = scored.result
    row = {"case": case.name, "kind": case.kind, "shape": "x".join(map(str, case.half1.shape[::-1])),
           "voxel_A": case.grid.voxel_size[0], "half_fsc0.143_A": res.half_fsc0143_A,
           "resolution_used_A": res.resolution_used_A, "bfactor_A2": res.bfactor_A2,
           "seconds": res.timing_s["total"], "note": case.note}
    for var, vals in res.variants.items():
        row.update({f"{var}:{k}": vals[k] for k in MODEL_METRICS})
    row.update({k: res.honesty[k] for k in HONESTY_KEYS})
    row.update({f"target:{k}": scored.ceiling[k] for k in MODEL_METRICS} if scored.ceiling else {})
    return row


def write_tsv(rows: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["\t".join(keys)]
    for r in rows:
        lines.append("\t".join(_f(r.get(k), 4) if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys))
    path.write_text("\n".join(lines) + "\n")


def _md_table(cases, results, kind: str) -> list[str]:
    sel = [(c, r) for c, r in zip(cases, results) if c.kind == kind]
    ceiling = any(r.ceiling for _, r in sel)
    head = ("| case | d_half (Å) | FSC-0.5 masked (Å) avg / sharp / enh | FSC-0.5 unmasked (Å) | CC_mask | CC_box "
            "| enh. halves: max FSC gain | noise: max FSC |"
            + (" target: FSC-0.5 masked / CC_mask |" if ceiling else "") + " note |")
    lines = [head, "|" + "---|" * (10 if ceiling else 9)]

    def ceil(t: dict | None) -> str:
        return (f" {_f(t['fsc0.5_masked_A'])} / {_f(t['cc_mask'], 3)} |" if t else " NA |") if ceiling else ""

    for c, r in sel:
        h, v = r.result.honesty, r.result.variants
        lines.append(f"| {c.name} | {_f(r.result.resolution_used_A)} | {_triple(v, 'fsc0.5_masked_A')} | "
                     f"{_triple(v, 'fsc0.5_unmasked_A')} | {_triple(v, 'cc_mask', 3)} | {_triple(v, 'cc_box', 3)} | "
                     f"{_f(h['max_fsc_gain_beyond_raw0.143'], 3)} | {_f(h['noise_max_fsc_beyond_10A'], 3)} |"
                     f"{ceil(r.ceiling)} {c.note} |")
    if len(sel) > 1:
        lines += [_aggregate_line(label, stat, [r for _, r in sel], ceiling, ceil)
                  for label, stat in (("mean", np.nanmean), ("median", np.nanmedian))]
    return lines


def _aggregate_line(label: str, stat, sel: list[Scored], ceiling: bool, ceil) -> str:
    """The mean or median row of a table (NaN ignored; honesty columns NA when no case ran the check)."""
    agg = {v: {k: float(stat([r.result.variants[v][k] for r in sel])) for k in MODEL_METRICS} for v in VARIANTS}
    hon = {k: stat([r.result.honesty[k] for r in sel]) if any(np.isfinite(r.result.honesty[k]) for r in sel)
           else float("nan") for k in HONESTY_KEYS}
    top = ({k: float(stat([r.ceiling[k] for r in sel if r.ceiling])) for k in ("fsc0.5_masked_A", "cc_mask")}
           if ceiling else None)
    return (f"| **{label}** | | {_triple(agg, 'fsc0.5_masked_A')} | {_triple(agg, 'fsc0.5_unmasked_A')} | "
            f"{_triple(agg, 'cc_mask', 3)} | {_triple(agg, 'cc_box', 3)} | "
            f"{_f(hon['max_fsc_gain_beyond_raw0.143'], 3)} | {_f(hon['noise_max_fsc_beyond_10A'], 3)} |"
            f"{ceil(top)} |")


def acceptance_lines(cases, results) -> list[str]:
    """Issue 5's two map-model goals on the simulated set: median gain over sharpening, for the enhanced
    map and for the training target itself (the most a network that learnt its target could gain)."""
    sel = [r for c, r in zip(cases, results) if c.kind == "simulated"]
    if not sel:
        return []

    def med(key, get):
        return float(np.nanmedian([get(r)[key] for r in sel]))

    sharp = {k: med(k, lambda r: r.result.variants["sharpened"]) for k in ("fsc0.5_masked_A", "cc_mask")}
    rows = [("enhanced", lambda r: r.result.variants["enhanced"])]
    if all(r.ceiling for r in sel):
        rows.append(("training target (ceiling)", lambda r: r.ceiling))
    lines = ["| map | median FSC-0.5 masked (Å) | gain over sharpening (goal ≥ 0.5 Å) | median CC_mask "
             "| gain over sharpening (goal ≥ 0.05) |", "|---|---|---|---|---|",
             f"| sharpened | {sharp['fsc0.5_masked_A']:.4f} | | {sharp['cc_mask']:.4f} | |"]
    def verdict(gain, goal):
        return "met" if gain >= goal else f"short by {goal - gain:.4f}"

    for name, get in rows:
        f, c = med("fsc0.5_masked_A", get), med("cc_mask", get)
        df, dc = sharp["fsc0.5_masked_A"] - f, c - sharp["cc_mask"]
        lines.append(f"| {name} | {f:.4f} | {df:+.4f} ({verdict(df, 0.5)}) | {c:.4f} | "
                     f"{dc:+.4f} ({verdict(dc, 0.05)}) |")
    return lines


def summary_figure(cases, results, path: Path) -> None:
    """Per-case map-model FSC-0.5 (masked) and CC_mask for the three variants, plus the honesty checks."""
    from deepemhancer_engine.plots import _pyplot

    plt = _pyplot()
    names = [c.name for c in cases]
    x = np.arange(len(cases))
    fig, axes = plt.subplots(3, 1, figsize=(max(7, 0.45 * len(cases) + 2), 8.5), dpi=100, sharex=True)
    colours = {"average": "tab:gray", "sharpened": "tab:blue", "enhanced": "tab:red"}
    for ax, key, label in ((axes[0], "fsc0.5_masked_A", "map-model FSC-0.5, masked (Å)\nlower is better"),
                           (axes[1], "cc_mask", "CC_mask\nhigher is better")):
        for j, (v, col) in enumerate(colours.items()):
            ax.bar(x + (j - 1) * 0.27, [r.result.variants[v][key] for r in results], 0.27, color=col, label=v)
        ceiling = [r.ceiling[key] if r.ceiling else np.nan for r in results]
        if np.any(np.isfinite(ceiling)):
            ax.plot(x + 0.27, ceiling, "kv", ms=5, label="training target (ceiling)")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].plot(x, [r.result.resolution_used_A for r in results], "k_", ms=14,
                 label="half-map / nominal resolution")
    axes[0].legend(fontsize=7, ncol=4)
    gain = [r.result.honesty["max_fsc_gain_beyond_raw0.143"] for r in results]
    noise = [r.result.honesty["noise_max_fsc_beyond_10A"] for r in results]
    axes[2].bar(x - 0.2, gain, 0.4, color="tab:orange", label="enhanced halves: max FSC gain beyond raw 0.143")
    axes[2].bar(x + 0.2, noise, 0.4, color="tab:purple", label="noise test: max FSC beyond 10 Å")
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set_ylabel("honesty checks\n~0 is honest", fontsize=8)
    axes[2].legend(fontsize=7)
    axes[2].set_xticks(x)
    axes[2].set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_markdown(path: Path, cases, results, meta: dict) -> None:
    lines = [
        "# Quality benchmark", "",
        f"Generated by `benchmarks/quality.py` on {meta['date']}: weights `{meta['weights']}` "
        f"(model card: {meta['card']}), device {meta['device']}, total {meta['seconds']:.0f} s "
        f"({meta['n_sim']} simulated + {meta['n_real']} real cases).", "",
    ]
    if meta["placeholder"]:
        lines += ["**These weights are RANDOM placeholders: the 'enhanced' numbers only show that the benchmark "
                  "runs; they say nothing about DeepEMhancer's quality.**", ""]
    lines += [
        "Variants in every cell: **average** of the halves / RELION-style automatic **sharpening** (Guinier B "
        "fit 10 Å → resolution, FSC weighting sqrt(2FSC/(1+FSC)), low-pass at the resolution) / **enhanced**. "
        "Map-model FSC-0.5 uses the gemmi electron-scattering model map at full resolution, masked (atoms + 3 Å, "
        "4 Å cosine edge) and unmasked; CC_mask / CC_box (phenix.map_model_cc definitions) use the model map "
        "low-passed at the resolution, CC_mask inside atoms dilated by the phenix radius for that resolution.", "",
        "Map-model numbers reward maps that look like the model beyond what the data support (the "
        "'metric trap'); the two model-free checks must stay near 0: **enh. halves: max FSC gain** = max over "
        "frequencies beyond the raw half-map FSC-0.143 of (FSC of independently enhanced halves − FSC of raw "
        "halves); **noise: max FSC** = max FSC beyond 10 Å between the outputs for two independent pure-noise "
        "inputs. Metric code: `deepemhancer_engine/metrics.py` (shared with `deepemhancer evaluate`).", "",
        "![summary](summary.png)", "",
        f"## Simulated held-out pairs (split_eval.txt, seeds ≥ {EVAL_SEED})", "",
        "d_half = measured half-map FSC-0.143 resolution. **target** = the pair's training target scored like "
        "the maps (what a network that learnt its target perfectly would return: the ceiling of these metrics "
        "for this training).", "",
        *_md_table(cases, results, "simulated"), "",
        "Issue 5's map-model goals (medians over the simulated cases):", "",
        *acceptance_lines(cases, results), "",
        "## Real maps with models (shared/real_maps)", "",
        "No half maps exist for these: **each map is used as both halves**, so the independent-halves check "
        "does not apply (NA) and the half-map FSC is 1 everywhere; d_half is the nominal resolution from "
        "SOURCES.md instead (EMD-5170: assumed 8 Å). Deposited maps are often already sharpened/filtered, so "
        "the 'average' variant is the deposited map itself.", "",
        *_md_table(cases, results, "real"), "",
        "## Figures of example cases", "",
    ]
    for c, r in zip(cases, results):
        if "fsc_model_png" in r.result.files:
            rel = Path(r.result.files["fsc_model_png"]).parent.relative_to(path.parent)
            lines += [f"**{c.name}** ({c.kind}):", "",
                      f"![{c.name} FSC vs model]({rel}/fsc_model.png) ![{c.name} checks]({rel}/fsc_halves.png)",
                      "", f"![{c.name} slices]({rel}/slices.png)", ""]
    lines += ["Per-case numbers: `quality.tsv` and `cases/<case>/metrics.tsv`; FSC curves in "
              "`cases/<case>/fsc_curves.tsv`.", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="weights .pt (card beside it); default: the registry model of -p")
    ap.add_argument("-p", "--processingType", dest="processing", default="tightTarget")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--limit", type=int, default=12, help="simulated cases (default 12)")
    ap.add_argument("--real-limit", type=int, default=None, help="at most this many real maps")
    ap.add_argument("--max-box", type=float, default=96.0,
                    help="box edge limit in A (default 96: 2x2x2 cubes at 1 A): simulated boxes are made no bigger "
                         "(structures that would be cropped are skipped); real maps are cropped around the model")
    ap.add_argument("--noise-cases", type=int, default=100, help="run the noise test on the first N cases of each set")
    ap.add_argument("--plot-cases", type=int, default=1, help="write PNGs for the first N cases of each set")
    ap.add_argument("--no-sim", action="store_true")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--outdir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--structures", default=str(SHARED / "structures"))
    ap.add_argument("--real-maps", default=str(SHARED / "real_maps"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")

    from deepemhancer_engine.config import EnhanceConfig, InferenceConfig
    from deepemhancer_engine.pipeline import load

    config = EnhanceConfig(model=args.processing, weights=Path(args.weights) if args.weights else None,
                           inference=InferenceConfig(device=args.device))
    loaded = load(config)  # fail early on missing weights
    outdir = Path(args.outdir)
    (outdir / "cases").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cases, results, rows = run_cases(_sources(args), config, loaded, outdir, args)
    seconds = time.perf_counter() - t0
    write_reports(outdir, cases, results, rows, args, loaded.card, seconds)
    return 0


def _sources(args) -> list:
    """The case generators asked for: simulated held-out pairs, then real maps."""
    sources = []
    if not args.no_sim:
        target = "wideTarget" if args.processing == "wideTarget" else "tightTarget"
        sources.append(simulated_cases(args.limit, Path(args.structures), args.max_box, target))
    if not args.no_real:
        real = real_cases(Path(args.real_maps), args.max_box)
        sources.append(real if args.real_limit is None else (c for _, c in zip(range(args.real_limit), real)))
    return sources


def run_cases(sources, config, loaded, outdir: Path, args) -> tuple[list[Case], list[Scored], list[dict]]:
    """Evaluate every case (noise test and PNGs for the first cases of each set), freeing its maps after;
    returns the cases, their results and their quality.tsv rows."""
    cases, results, rows = [], [], []
    for source in sources:
        for i, case in enumerate(source):
            log.info("case %s (%s): %s", case.name, case.kind, case.note)
            enhancer = make_enhancer(config, case.grid.voxel_size, loaded=loaded)
            res = evaluate(case.half1, case.half2, case.grid, enhancer=enhancer, model=case.model,
                           outdir=outdir / "cases" / case.name, noise_test=i < args.noise_cases,
                           resolution=case.resolution, label=f"{case.name} ({case.kind})", plots=i < args.plot_cases,
                           seed=EVAL_SEED + 500_000 + len(cases))
            ceiling = None
            if case.target is not None:
                ceiling = model_metrics({"target": case.target}, case.model, case.grid,
                                        res.resolution_used_A)["target"]
            log.info("case %s done in %.0f s", case.name, res.timing_s["total"])
            res.model_map = None  # free memory
            results.append(Scored(res, ceiling))
            rows.append(case_row(case, results[-1]))
            cases.append(case)
            case.half1 = case.half2 = case.target = None  # free memory
    return cases, results, rows


def write_reports(outdir: Path, cases: list[Case], results: list[Scored], rows: list[dict], args, card,
                  seconds: float) -> None:
    """quality.tsv, summary.png and quality.md."""
    write_tsv(rows, outdir / "quality.tsv")
    if cases:
        summary_figure(cases, results, outdir / "summary.png")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "weights": args.weights or f"registry {args.processing}",
            "card": f"{getattr(card, 'name', '?')} {getattr(card, 'version', '')}".strip(),
            "placeholder": bool(getattr(card, "is_placeholder", False)), "device": args.device, "seconds": seconds,
            "n_sim": sum(c.kind == "simulated" for c in cases), "n_real": sum(c.kind == "real" for c in cases)}
    write_markdown(outdir / "quality.md", cases, results, meta)
    log.info("wrote %s in %.0f s", outdir / "quality.md", seconds)


if __name__ == "__main__":
    raise SystemExit(main())
