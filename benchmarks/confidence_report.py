"""Tables and figures of benchmarks/confidence.py (kept apart so the measurement script stays short)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _f(v, digits=3) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def chosen(table: list[dict], noise_limit: float, min_spearman: float) -> dict | None:
    """The tuning rule (benchmarks/confidence.py, GRID): noise median <= ``noise_limit``, core median >= TRUSTED,
    median Spearman >= ``min_spearman``; of those the smallest patch ratio."""
    from deepemhancer_engine.confidence import TRUSTED

    ok = [r for r in table if r["noise_median"] <= noise_limit and r["core"] >= TRUSTED
          and r["spearman"] >= min_spearman]
    return min(ok, key=lambda r: r["patch_ratio"]) if ok else None


def write_tuning(path: Path, table: list[dict], meta: dict, noise_limit: float, min_spearman: float) -> None:
    keys = ("window", "snr_half", "sigmas", "spearman", "naive_spearman", "patch_ratio", "core", "noise_median")
    best = chosen(table, noise_limit, min_spearman)
    lines = [f"# Confidence parameters: tuning grid ({meta['split']}, seeds from {meta['seed0']})", "",
             f"`python benchmarks/confidence.py {meta.get('argv', '')}`: {table[0]['cases']} simulated pairs, "
             f"{table[0]['patch_cases']} with patches, {table[0]['noise_cases']} pure-noise cases; weights "
             f"{Path(meta['weights']).name}. Rule: among the settings whose pure-noise median confidence is at most "
             f"{noise_limit:g}, whose rigid core's median confidence is at least 0.5 and whose median Spearman is at "
             f"least {min_spearman:g} (the previous definition's on these pairs), the smallest patch ratio.", "",
             "Chosen: " + (", ".join(f"{k} {best[k]:g}" for k in keys[:3]) if best else "none passes the rule"), "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in sorted(table, key=lambda r: -r["spearman"]):
        lines.append("| " + " | ".join(_f(row[k], 2 if k in keys[:3] else 3) for k in keys) + " |")
    path.write_text("\n".join(lines) + "\n")


GATES = (
    ("Spearman(block confidence, block CC with the model), median over pairs", "spearman", ">=", 0.6),
    ("... above the naive answer (raw halves' block CC) by", "spearman_gain", ">=", 0.1),
    ("patches / rigid core, median confidence (median over pairs with patches)", "patch_ratio", "<=", 0.6),
    ("pure-noise halves, median confidence in the box", "noise_median", "<=", 0.1),
)
CASE_KEYS = ("case", "voxel", "d_half", "blocks", "spearman", "naive_spearman", "molecule_median", "core",
             "smeared", "weak", "patch_ratio", "ligand", "micelle", "solvent_median")


def _gate_lines(summary: dict) -> list[str]:
    summary = {**summary, "spearman_gain": summary["spearman"] - summary["naive_spearman"]}
    lines = ["| figure | value | target | |", "|---|---|---|---|"]
    for text, key, op, target in GATES:
        v = summary[key]
        ok = (v >= target) if op == ">=" else (v <= target)
        lines.append(f"| {text} | {_f(v)} | {op} {target:g} | {'met' if ok else '**NOT met**'} |")
    return lines


def _report_only(rows: list[dict]) -> list[str]:
    from scipy.stats import spearmanr

    sim = [r for r in rows if "spearman" in r]
    lines = []
    for key, what in (("ligand", "pseudo-ligand atoms"), ("micelle", "micelle belt (outside the wide mask)")):
        have = [r for r in sim if np.isfinite(r.get(key, np.nan))]
        if have:
            lines.append(f"- {what}: median confidence {_f(float(np.median([r[key] for r in have])))} on "
                         f"{len(have)} pairs (their rigid core: {_f(float(np.median([r['core'] for r in have])))}).")
        else:
            lines.append(f"- {what}: none drawn in these pairs.")
    if len(sim) >= 3:
        rho = spearmanr([r["d_half"] for r in sim], [r["molecule_median"] for r in sim]).statistic
        lines.append(f"- against d_half ({_f(min(r['d_half'] for r in sim), 2)}-{_f(max(r['d_half'] for r in sim), 2)}"
                     f" A): Spearman of the molecule's median confidence with d_half over pairs {_f(float(rho))}.")
    return lines


def _table(rows: list[dict], keys) -> list[str]:
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(str(r[k]) if isinstance(r.get(k), str) else _f(r.get(k), 2 if k in (
            "voxel", "d_half") else (0 if k in ("blocks", "cubes", "skipped") else 3)) for k in keys) + " |")
    return out


def write_report(outdir: Path, rows: list[dict], summary: dict, runs, meta: dict) -> None:
    sim = [r for r in rows if "spearman" in r]
    noise = [r for r in rows if "noise_median" in r]
    figure = make_figure(next((r for r in runs if r.model_map is not None), None), outdir / "confidence.png")
    lines = [
        "# Confidence map: held-out calibration", "",
        f"`python benchmarks/confidence.py {meta.get('argv', '')}`: {summary['cases']} simulated pairs of "
        f"`{meta['split']}` (seeds from {meta['seed0']}), {summary['noise_cases']} pure-noise cases; weights "
        f"`{Path(meta['weights']).name}`; parameters {meta.get('params', '')} (chosen on the train split, "
        "`confidence_tuning.md`); " + f"{meta['seconds'] / 60:.0f} min on {meta.get('machine', 'CPU')}.", "",
        "Blocks: 7 A cubes at least half inside the pair's tight model mask. Block CC: Pearson correlation of "
        "the enhanced map with the model map in the block. Naive answer: the raw halves' Pearson correlation in "
        "the block. Patches: the simulator's smeared (extra B 150-400) and low-occupancy (0-0.4) spheres inside "
        "the molecule; rigid core: the rest of the molecule, 3 A away from any patch.", "",
        "## Gates", "", *_gate_lines(summary), "",
        f"Pure noise: the network ran on every cube ({sum(r['cubes'] for r in noise)} cubes, "
        f"{summary['noise_skipped']} skipped); naive block CC of the raw noise halves, median "
        f"{_f(summary['noise_naive_median'])}.", "",
        "## Reported, not gated", "", *_report_only(rows), "",
        "## Per pair", "", *_table(sim, CASE_KEYS), "",
        "## Pure noise", "", *_table(noise, ("case", "voxel", "d_half", "noise_median", "noise_p95",
                                             "noise_naive_median", "cubes", "skipped")), "",
    ]
    if figure:
        lines += [f"![map, confidence and local error]({figure.name})", "",
                  "Central slices of one held-out pair: the enhanced map, its confidence, and the local error "
                  "(1 - block CC with the model map, inside the molecule)."]
    (outdir / "confidence.md").write_text("\n".join(lines) + "\n")
    (outdir / "confidence.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))


def make_figure(run, path: Path) -> Path | None:
    """Slices through the middle of one pair: enhanced map, confidence (0..1) and local error."""
    if run is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from confidence import DEFAULT_PARAMS

    from deepemhancer_engine.confidence import BLOCK_EDGE, block_cc, blocks, confidence_map

    conf = confidence_map(*run.halves, run.voxel, run.d_half, DEFAULT_PARAMS)
    edge = max(2, round(BLOCK_EDGE / run.voxel))
    err = _paint(1.0 - block_cc(run.enhanced, run.model_map, edge), run.enhanced.shape, edge)
    inside = _paint(blocks(run.molecule.astype(np.float32), edge).mean(1), run.enhanced.shape, edge) >= 0.5
    z = int(np.argmax(run.molecule.sum((1, 2))))
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.2))
    panels = ((run.enhanced[z], "enhanced map", "gray", None), (conf[z], "confidence", "viridis", (0, 1)),
              (np.where(inside[z], err[z], np.nan), "local error: 1 - block CC with model", "magma", (0, 1)))
    for a, (img, title, cmap, lim) in zip(ax, panels):
        im = a.imshow(img, cmap=cmap, origin="lower", vmin=lim[0] if lim else None, vmax=lim[1] if lim else None)
        a.set_title(title)
        a.set_xticks([])
        a.set_yticks([])
        fig.colorbar(im, ax=a, fraction=0.046)
    fig.suptitle(f"{run.name} (held-out, seed {run.seed}), d_half {run.d_half:.2f} A, slice z={z}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _paint(values: np.ndarray, shape, edge: int) -> np.ndarray:
    """Per-block values back on the grid (NaN beyond the last whole block)."""
    nz, ny, nx = (n // edge for n in shape)
    grid = np.repeat(np.repeat(np.repeat(values.reshape(nz, ny, nx), edge, 0), edge, 1), edge, 2)
    out = np.full(shape, np.nan, np.float32)
    out[: nz * edge, : ny * edge, : nx * edge] = grid
    return out
