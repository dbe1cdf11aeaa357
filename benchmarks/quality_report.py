"""The report of ``benchmarks/quality.py``: quality.md, quality.tsv, noise_grid.tsv and summary.png.

Every table compares the enhanced map with the *best classical map* of each metric: whichever of the
average and the sharpened map has the better median over the table's cases (``evaluate.best_classical``).
LocScale (model-based, so not available to a user without a model) is shown beside, never as the yardstick.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from deepemhancer_engine.evaluate import (
    CLASSICAL,
    HONESTY_KEYS,
    METRIC_DIRECTION,
    MODEL_METRICS,
    VARIANTS,
    best_classical,
    gain_over,
)

EVAL_SEED = 10_000_000
LABELS = {"average": "avg", "sharpened": "sharp", "enhanced": "enh", "enhanced_nominal": "enh@d",
          "locscale": "LocScale", "target": "target"}
#: The maps of each set's per-case cells (LocScale gets its own column).
SHOWN = {"simulated": ("average", "sharpened", "enhanced"),
         "real": ("average", "sharpened", "enhanced", "enhanced_nominal")}
#: Per-case table metrics: (metric, title, digits).
TABLE_METRICS = (("fsc0.5_masked_A", "FSC-0.5 masked (Å)", 2), ("fsc0.5_unmasked_A", "FSC-0.5 unmasked (Å)", 2),
                 ("cc_mask", "CC_mask", 3), ("cc_box", "CC_box", 3))
TITLES = {"fsc0.5_masked_A": "FSC-0.5 masked (Å)", "fsc0.5_unmasked_A": "FSC-0.5 unmasked (Å)",
          "fsc0.143_masked_A": "FSC-0.143 masked (Å)", "fsc0.143_unmasked_A": "FSC-0.143 unmasked (Å)",
          "cc_mask": "CC_mask", "cc_box": "CC_box", "solvent_rms_ratio": "solvent/molecule rms",
          "intensity_ratio": "intensity ratio"}


def _f(v, digits=2) -> str:
    return "NA" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _digits(metric: str) -> int:
    return 2 if metric.endswith("_A") else 3


# ------------------------------------------------------------------------------------------ rows and stats


def _row_values(scored) -> dict[str, dict[str, float]]:
    """{map: {metric: value}} of one case: the variants, the nominal run and the target."""
    return {v: scored.values(v) for v in (*VARIANTS, "enhanced_nominal", "target")}


def _aggregate(sel: list, stat) -> tuple[dict, dict]:
    """``stat`` (np.nanmean / np.nanmedian) over the cases of every map's metrics and of the honesty checks
    (NaN where no case has a value)."""
    def agg(values):
        values = [v for v in values if v is not None and math.isfinite(v)]
        return float(stat(values)) if values else float("nan")

    rows = [_row_values(r) for r in sel]
    vals = {m: {k: agg([row[m][k] for row in rows]) for k in MODEL_METRICS} for m in rows[0]}
    hon = {k: agg([r.result.honesty[k] for r in sel]) for k in HONESTY_KEYS}
    return vals, hon


def medians(sel: list) -> dict[str, dict[str, float]]:
    """{map: {metric: median over the cases}}."""
    return _aggregate(sel, np.nanmedian)[0]


def case_row(case, scored) -> dict:
    """One row of quality.tsv: the half-map numbers, every map's metrics, the honesty checks, the ceiling."""
    res = scored.result
    row = {"case": case.name, "kind": case.kind, "shape": "x".join(map(str, res.shape[::-1])),
           "voxel_A": case.grid.voxel_size[0], "half_fsc0.143_A": res.half_fsc0143_A,
           "resolution_used_A": res.resolution_used_A, "bfactor_A2": res.bfactor_A2,
           "solvent_distance_A": res.solvent_distance_A, "seconds": res.timing_s["total"], "note": case.note}
    for var, vals in {**res.variants, **(res.extra_variants or {})}.items():
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


# ------------------------------------------------------------------------------------------ per-case tables


def _cell(vals: dict, maps, metric: str, digits: int) -> str:
    return " / ".join(_f(vals[m][metric], digits) for m in maps)


def _columns(kind: str, ceiling: bool) -> list:
    """(title, render(vals, hon)) of a set's per-case table after the case and resolution columns."""
    shown = SHOWN[kind]
    names = " / ".join(LABELS[m] for m in shown)
    cols = [(f"{title} {names}", lambda vals, hon, k=k, d=d: _cell(vals, shown, k, d)) for k, title, d in TABLE_METRICS]
    cols.append(("LocScale: FSC-0.5 masked / CC_mask / CC_box", lambda vals, hon: " / ".join(
        _f(vals["locscale"][k], d) for k, d in (("fsc0.5_masked_A", 2), ("cc_mask", 3), ("cc_box", 3)))))
    sol = (*shown, "locscale")
    cols.append((f"solvent/molecule rms {' / '.join(LABELS[m] for m in sol)}",
                 lambda vals, hon: _cell(vals, sol, "solvent_rms_ratio", 3)))
    if kind == "real":
        cols.append(("intensity ratio enh / enh@d", lambda vals, hon: _cell(
            vals, ("enhanced", "enhanced_nominal"), "intensity_ratio", 2)))
    else:
        cols.append(("enh. halves: max FSC gain (in envelope)",
                     lambda vals, hon: f"{_f(hon['max_fsc_gain_beyond_raw0.143'], 3)} "
                                       f"({_f(hon.get('max_fsc_gain_in_envelope', float('nan')), 3)})"))
        cols.append(("in-band excess max (3/√n)", lambda vals, hon: (
            f"{_f(hon['inband_excess_max'], 3)} ({_f(hon['inband_chance_3sigma'], 3)})")))
    cols.append(("noise: max FSC", lambda vals, hon: _f(hon["noise_max_fsc_beyond_10A"], 3)))
    if ceiling:
        cols.append(("target: FSC-0.5 masked / CC_mask", lambda vals, hon: (
            f"{_f(vals['target']['fsc0.5_masked_A'])} / {_f(vals['target']['cc_mask'], 3)}")))
    return cols


def case_table(cases, results, kind: str) -> list[str]:
    """The per-case table of a set, with mean and median rows."""
    sel = [(c, r) for c, r in zip(cases, results) if c.kind == kind]
    if not sel:
        return ["(no cases run)"]
    cols = _columns(kind, any(r.ceiling for _, r in sel))
    d_title = "nominal d (Å)" if kind == "real" else "d_half (Å)"
    lines = ["| case | " + d_title + " | " + " | ".join(t for t, _ in cols) + " | note |",
             "|" + "---|" * (len(cols) + 3)]
    for c, r in sel:
        vals, hon = _row_values(r), r.result.honesty
        lines.append(f"| {c.name} | {_f(r.result.resolution_used_A)} | "
                     + " | ".join(fn(vals, hon) for _, fn in cols) + f" | {c.note} |")
    if len(sel) > 1:
        for label, stat in (("mean", np.nanmean), ("median", np.nanmedian)):
            vals, hon = _aggregate([r for _, r in sel], stat)
            lines.append(f"| **{label}** | | " + " | ".join(fn(vals, hon) for _, fn in cols) + " | |")
    return lines


# ------------------------------------------------------------------------------------------ best classical


def gain_table(cases, results, kind: str) -> list[str]:
    """Medians per metric: average, sharpened, the best classical of the two, the enhanced map and its gain
    over the best classical (positive: better), LocScale beside; the nominal run (real) or the training
    target (simulated) with their gains too."""
    sel = [r for c, r in zip(cases, results) if c.kind == kind]
    if not sel:
        return []
    med = medians(sel)
    others = [m for m in (("enhanced_nominal",) if kind == "real" else ("target",))
              if any(math.isfinite(med[m][k]) for k in MODEL_METRICS)]
    head = ("| metric (median over cases) | average | sharpened | best classical | enhanced | **gain of enhanced** | "
            + "".join(f"{LABELS[m]} | gain of {LABELS[m]} | " for m in others) + "LocScale (beside) |")
    lines = [head, "|" + "---|" * (7 + 2 * len(others))]
    for k in (k for k in MODEL_METRICS if METRIC_DIRECTION[k]):
        d = _digits(k)
        best = best_classical({v: med[v][k] for v in CLASSICAL}, k)
        ref = med[best][k]
        cells = [_f(med["average"][k], d), _f(med["sharpened"][k], d), f"{_f(ref, d)} ({best})",
                 _f(med["enhanced"][k], d), f"**{_signed(gain_over(med['enhanced'][k], ref, k), d)}**"]
        for m in others:
            cells += [_f(med[m][k], d), _signed(gain_over(med[m][k], ref, k), d)]
        lines.append(f"| {TITLES[k]} ({'lower' if METRIC_DIRECTION[k] < 0 else 'higher'} is better) | "
                     + " | ".join(cells) + f" | {_f(med['locscale'][k], d)} |")
    return lines


def _signed(v: float, digits: int) -> str:
    return "NA" if not math.isfinite(v) else f"{v:+.{digits}f}"


def goal_lines(cases, results) -> list[str]:
    """Issue 5's two map-model goals on the simulated set, against the best classical map of each metric:
    median gain of the enhanced map and of the training target (the most a network that learnt its target
    could gain); LocScale beside."""
    sel = [r for c, r in zip(cases, results) if c.kind == "simulated"]
    if not sel:
        return []
    med = medians(sel)
    goals = (("fsc0.5_masked_A", 0.5, 4), ("cc_mask", 0.05, 4))
    best = {k: best_classical({v: med[v][k] for v in CLASSICAL}, k) for k, _, _ in goals}
    lines = ["| map | median FSC-0.5 masked (Å) | gain over best classical (goal ≥ 0.5 Å) | median CC_mask "
             "| gain over best classical (goal ≥ 0.05) |", "|---|---|---|---|---|",
             "| best classical | " + " | | ".join(f"{med[best[k]][k]:.4f} ({best[k]})" for k, _, _ in goals) + " | |"]
    maps = [("enhanced", "enhanced")] + ([("training target (ceiling)", "target")] if all(r.ceiling for r in sel)
                                         else []) + [("LocScale (beside, needs the model)", "locscale")]
    for label, m in maps:
        cells = []
        for k, goal, d in goals:
            gain = gain_over(med[m][k], med[best[k]][k], k)
            verdict = "met" if gain >= goal else f"short by {goal - gain:.{d}f}"
            cells += [_f(med[m][k], d), f"{_signed(gain, d)} ({verdict})"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


# ------------------------------------------------------------------------------------------ in-band check


def _inband_runs(results) -> list:
    """The simulated cases' in-band results as honesty.InBandExcess on relative bands (fractions of the range
    1/10 A .. 1/d, equal for every case since the bands are equally wide in 1/A), for excess_spread."""
    from deepemhancer_engine.honesty import InBandExcess

    runs = []
    for r in results:
        b = r.result.inband_excess
        if not b:
            continue
        nb = len(b["excess"])
        runs.append(InBandExcess(edges=np.linspace(0.0, 1.0, nb + 1), excess=np.asarray(b["excess"]),
                                 fsc_halves=np.asarray(b["fsc_halves"]), fsc1_truth=np.asarray(b["fsc1_truth"]),
                                 fsc2_truth=np.asarray(b["fsc2_truth"]), n=np.asarray(b["n"])))
    return runs


def inband_lines(cases, results) -> list[str]:
    """Per case the excess of each band with its 3/sqrt(n), then the spread over the cases per band."""
    from deepemhancer_engine.honesty import excess_spread

    sel = [(c, r) for c, r in zip(cases, results) if c.kind == "simulated" and r.result.inband_excess]
    if not sel:
        return ["(not run: no simulated case with its noise-free signal)"]
    lines = ["| case | d_half (Å) | band edges (Å) | excess per band (coarse → fine) | 3/√n per band "
             "| FSC(e1, e2) per band | max | mean |", "|---|---|---|---|---|---|---|---|"]
    for c, r in sel:
        b = r.result.inband_excess
        lines.append(f"| {c.name} | {_f(r.result.resolution_used_A)} | {' / '.join(f'{e:.2f}' for e in b['edges_A'])} "
                     f"| {' / '.join(f'{x:+.3f}' for x in b['excess'])} | "
                     f"{' / '.join(f'{x:.3f}' for x in b['chance_3sigma'])} | "
                     f"{' / '.join(f'{x:.2f}' for x in b['fsc_halves'])} | {max(b['excess']):+.3f} | "
                     f"{np.mean(b['excess']):+.3f} |")
    runs = _inband_runs([r for _, r in sel])
    spread = excess_spread(runs)
    chance = np.median(np.stack([x.chance for x in runs]), axis=0)
    lines += ["", f"Spread over the {spread.runs} cases, each its own structure and noise seed, so the spread holds "
              f"both (band k of {len(spread.mean)}: the k-th equal slice of 1/10 Å … 1/d_half):", "",
              "| band | mean | std | min | max | mean + 3 std | median 3/√n |", "|---|---|---|---|---|---|---|"]
    for k in range(len(spread.mean)):
        lines.append(f"| {k + 1} | {spread.mean[k]:+.4f} | {spread.std[k]:.4f} | {spread.min[k]:+.4f} | "
                     f"{spread.max[k]:+.4f} | {spread.mean[k] + 3 * spread.std[k]:+.4f} | {chance[k]:.4f} |")
    return lines


# ------------------------------------------------------------------------------------------ noise grid


def noise_grid_lines(noise: list) -> list[str]:
    """Every case of the noise grid and the counts within the 3-sigma chance level and under 0.143."""
    if not noise:
        return ["(not run)"]
    lines = ["| case | spectrum | voxel (Å) | box | seeds | max FSC beyond 10 Å | 3σ chance 3/√n | within 3σ "
             "| < 0.143 | output rms / input rms | s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in noise:
        lines.append(f"| {r.name} | {r.spectrum} | {r.voxel_size:g} | {r.edge}³ | {r.seeds[0]}, {r.seeds[1]} | "
                     f"{r.max_fsc_beyond_10A:.3f} | {r.chance_3sigma:.3f} | {'yes' if r.within_chance else '**no**'} | "
                     f"{'yes' if r.under_0143 else '**no**'} | {r.output_rms_rel:.3g} | {r.seconds:.0f} |")
    n = len(noise)
    lines += ["", f"**Within 3σ: {sum(r.within_chance for r in noise)}/{n}; under 0.143: "
              f"{sum(r.under_0143 for r in noise)}/{n}; both (pass): {sum(r.passed for r in noise)}/{n}.**"]
    return lines


def write_noise_tsv(noise: list, path: Path) -> None:
    keys = ("name", "spectrum", "voxel_size", "seeds", "edge", "max_fsc_beyond_10A", "chance_3sigma",
            "within_chance", "under_0143", "passed", "output_rms_rel", "seconds")
    lines = ["\t".join(keys)]
    for r in noise:
        vals = [getattr(r, k) for k in keys]
        lines.append("\t".join(f"{v:.4g}" if isinstance(v, float) else
                               ",".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in vals))
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ figure and files


def summary_figure(cases, results, path: Path) -> None:
    """Per-case map-model FSC-0.5 (masked) and CC_mask for the variants (the nominal run marked), plus the
    honesty checks."""
    from deepemhancer_engine.plots import _pyplot

    plt = _pyplot()
    x = np.arange(len(cases))
    fig, axes = plt.subplots(3, 1, figsize=(max(7, 0.5 * len(cases) + 2), 8.5), dpi=100, sharex=True)
    colours = {"average": "tab:gray", "sharpened": "tab:blue", "enhanced": "tab:red", "locscale": "tab:green"}
    w = 0.2
    for ax, key, label in ((axes[0], "fsc0.5_masked_A", "map-model FSC-0.5, masked (Å)\nlower is better"),
                           (axes[1], "cc_mask", "CC_mask\nhigher is better")):
        for j, (v, col) in enumerate(colours.items()):
            ax.bar(x + (j - 1.5) * w, [r.values(v)[key] for r in results], w, color=col, label=v)
        for m, style, name in (("target", "kv", "training target (ceiling)"),
                               ("enhanced_nominal", "r^", "enhanced at the nominal resolution")):
            ys = [r.values(m)[key] for r in results]
            if np.any(np.isfinite(ys)):
                ax.plot(x + 0.5 * w, ys, style, ms=5, label=name)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].plot(x, [r.result.resolution_used_A for r in results], "k_", ms=14, label="half-map / nominal resolution")
    axes[0].legend(fontsize=7, ncol=3)
    checks = (("max_fsc_gain_beyond_raw0.143", "tab:orange", "enhanced halves: max FSC gain beyond raw 0.143"),
              ("inband_excess_max", "tab:cyan", "in-band excess, max over bands"),
              ("noise_max_fsc_beyond_10A", "tab:purple", "white-noise test: max FSC beyond 10 Å"))
    for j, (key, col, name) in enumerate(checks):
        axes[2].bar(x + (j - 1) * 0.27, [r.result.honesty[key] for r in results], 0.27, color=col, label=name)
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set_ylabel("honesty checks\n~0 is honest", fontsize=8)
    axes[2].legend(fontsize=7)
    axes[2].set_xticks(x)
    axes[2].set_xticklabels([c.name for c in cases], rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_reports(outdir: Path, cases: list, results: list, noise: list, args, card, seconds: float) -> None:
    """quality.tsv, noise_grid.tsv, summary.png and quality.md."""
    import logging

    write_tsv([case_row(c, r) for c, r in zip(cases, results)], outdir / "quality.tsv")
    if noise:
        write_noise_tsv(noise, outdir / "noise_grid.tsv")
    if cases:
        summary_figure(cases, results, outdir / "summary.png")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "weights": args.weights or f"registry {args.processing}",
            "card": f"{getattr(card, 'name', '?')} {getattr(card, 'version', '')}".strip(),
            "placeholder": bool(getattr(card, "is_placeholder", False)), "device": args.device, "seconds": seconds,
            "n_sim": sum(c.kind == "simulated" for c in cases), "n_real": sum(c.kind == "real" for c in cases),
            "n_noise": len(noise), "noise_edge": max(96, args.noise_edge)}
    write_markdown(outdir / "quality.md", cases, results, noise, meta)
    logging.getLogger("quality").info("wrote %s in %.0f s", outdir / "quality.md", seconds)


def _intro(meta: dict) -> list[str]:
    lines = ["# Quality benchmark", "",
             f"Generated by `benchmarks/quality.py` on {meta['date']}: weights `{meta['weights']}` "
             f"(model card: {meta['card']}), device {meta['device']}, total {meta['seconds']:.0f} s "
             f"({meta['n_sim']} simulated + {meta['n_real']} real cases + {meta['n_noise']} noise-grid cases).", ""]
    if meta["placeholder"]:
        lines += ["**These weights are RANDOM placeholders: the 'enhanced' numbers only show that the benchmark "
                  "runs; they say nothing about DeepEMhancer's quality.**", ""]
    return lines + [
        "Maps: **average** of the halves; RELION-style automatic **sharpening** (Guinier B fit 10 Å → resolution, "
        "FSC weighting sqrt(2FSC/(1+FSC)), low-pass at the resolution); **enhanced**; **LocScale** (model-based "
        "local amplitude scaling of the average to the full-resolution model map, windows 7 × resolution, "
        "low-passed at the resolution, no mask: `deepemhancer_engine/locscale.py`). Map-model FSC uses the "
        "gemmi electron-scattering model map at full resolution, masked (atoms + 3 Å, 4 Å cosine edge) and "
        "unmasked; CC_mask / CC_box (phenix.map_model_cc definitions) use the model map low-passed at the "
        "resolution, CC_mask inside atoms dilated by the phenix radius r for that resolution.", "",
        "**Best classical map**: for each metric, whichever of the average and the sharpened map has the better "
        "median over the table's cases (lower Å for FSC resolutions, higher for CCs, lower for the solvent ratio); "
        "every gain is the enhanced map's median minus it, signed so that **positive = better** (Å for "
        "resolutions). LocScale needs the atomic model, so it is shown beside, never as the yardstick.", "",
        "**solvent/molecule rms**: rms over the solvent (voxels farther than r + d, at least 6 Å, from every atom) "
        "over rms inside the CC_mask atom mask, both about the solvent mean: how clean the solvent is next to the "
        "density it surrounds (scale- and offset-free; unmodelled density such as a micelle counts as solvent). "
        "**intensity ratio**: rms inside the CC_mask atom mask of the enhanced map over that of the input, each about "
        "its own solvent mean (1: the input's scale kept). Code: `metrics.solvent_ratio`, "
        "`metrics.intensity_ratio`.", "",
        "Map-model numbers reward maps that look like the model beyond what the data support (the "
        "'metric trap'); the model-free checks must stay near 0: **enh. halves: max FSC gain** = max over "
        "frequencies beyond the raw half-map FSC-0.143 of (FSC of independently enhanced halves − FSC of raw "
        "halves; in brackets against the raw halves inside the envelopes the data beyond the limit come back in: "
        "masking the solvent raises any FSC, so this is the like-for-like figure); **in-band excess** (below); "
        "**noise: max FSC** = max FSC beyond 10 Å between the outputs for two "
        "independent white-noise inputs (evaluate's `--noise-test`, at the case's resolution limit); the noise "
        "grid (below) is the stricter test.", "", "![summary](summary.png)", ""]


def _simulated_section(cases, results) -> list[str]:
    return [
        f"## Simulated held-out pairs (split_eval.txt, seeds ≥ {EVAL_SEED})", "",
        "d_half = measured half-map FSC-0.143 resolution (the enhancement's resolution limit, as for a half-map "
        "run). **target** = the pair's training target scored like the maps (what a network that learnt its "
        "target perfectly would return: the ceiling of these metrics for this training).", "",
        *case_table(cases, results, "simulated"), "",
        "Enhanced against the best classical map, metric by metric (medians over the simulated cases):", "",
        *gain_table(cases, results, "simulated"), "",
        "Issue 5's map-model goals (medians over the simulated cases), against the best classical map:", "",
        *goal_lines(cases, results), "",
        "### In-band honesty check", "",
        "E = the enhancement of the pair's noise-free signal S (same resolution limit as the halves; the network "
        "normalises S with the halves' noise statistics, since S has no noise of its own), e1, e2 = the "
        "independently enhanced halves (those of the halves check). Per band between 10 Å and d_half (4 bands "
        "equally wide in 1/Å, band-pooled sums): **excess = FSC(e1, e2) − FSC(e1, E)·FSC(e2, E)**. 0 when the "
        "enhanced halves differ from E only by independent errors; a component both halves share that E lacks "
        "(invented from noise) gives its share of the band power. 3/√n is the 3σ chance bound of the band.", "",
        *inband_lines(cases, results), ""]


def _real_section(cases, results) -> list[str]:
    return [
        "## Real maps with models (shared/real_maps), as a user runs them", "",
        "Each map whole (no crop), one map, `enhance` with the default configuration: for a single map that means "
        "**no resolution limit** (the main column, **enh**); **enh@d** = the same map enhanced with "
        "`--resolution` = the nominal resolution d from SOURCES.md (EMD-5170: assumed 8 Å), beside it. Low-pass, "
        "sharpening, CC_mask and LocScale use d. No half maps exist: the map is used as both halves, so "
        "**the independent-halves and in-band honesty checks do not apply** (not run), and the 'average' is the "
        "deposited map itself, often already sharpened/filtered by its authors. Published median changes over the "
        "deposited map on 121 other deposited maps (CryoTEN paper's validation tables, Selvaraj, Wang & Cheng, "
        "Bioinformatics 2025): CC_box DeepEMhancer −0.034, EMReady +0.143; CC_mask −0.122 and +0.016.", "",
        *case_table(cases, results, "real"), "",
        "Enhanced against the best classical map, metric by metric (medians over the real maps):", "",
        *gain_table(cases, results, "real"), ""]


def _noise_section(noise: list, meta: dict) -> list[str]:
    return [
        "## Noise grid (coloured noise, `noisegen.noise_test_grid`)", "",
        f"24 fixed cases: 4 spectra (falling, flat, rising, rising with a Nyquist roll-off; none is the training "
        f"simulator's noise) × voxel sizes 0.8 / 1.3 / 2 Å × 2 seeds. Per case two independent noise volumes of "
        f"{meta['noise_edge']}³ voxels (seeds s and s + 1000, std 1) are enhanced and their outputs compared: "
        "**pass = max FSC beyond 10 Å within the 3σ chance level 3/√n (n: coefficients of the sparsest shell "
        "beyond 10 Å) and under 0.143**. **No resolution limit** is applied, so the test measures the network: "
        "with a limit d the output beyond d is the input by construction and would pass there by construction. "
        "**No mask** is given, so no step skips solvent cubes (cubes are skipped only with a mask).", "",
        *noise_grid_lines(noise), ""]


def write_markdown(path: Path, cases, results, noise: list, meta: dict) -> None:
    lines = _intro(meta)
    if meta["n_sim"]:
        lines += _simulated_section(cases, results)
    if meta["n_real"]:
        lines += _real_section(cases, results)
    if noise:
        lines += _noise_section(noise, meta)
    figures = [(c, r) for c, r in zip(cases, results) if "fsc_model_png" in r.result.files]
    if figures:
        lines += ["## Figures of example cases", ""]
    for c, r in figures:
        rel = Path(r.result.files["fsc_model_png"]).parent.relative_to(path.parent)
        lines += [f"**{c.name}** ({c.kind}):", "",
                  f"![{c.name} FSC vs model]({rel}/fsc_model.png) ![{c.name} checks]({rel}/fsc_halves.png)",
                  "", f"![{c.name} slices]({rel}/slices.png)", ""]
    lines += ["Per-case numbers: `quality.tsv` and `cases/<case>/metrics.tsv` (per-band in-band values in "
              "`cases/<case>/summary.json`); FSC curves in `cases/<case>/fsc_curves.tsv`; noise grid in "
              "`noise_grid.tsv`.", ""]
    path.write_text("\n".join(lines))
