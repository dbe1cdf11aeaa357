"""Report of the robustness sweep (``robustness.py``): ``robustness.md`` (one row per cell) and ``robustness.png``
(heat map of the enhanced-minus-sharpened gains per cell)."""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path

import numpy as np

#: Acceptance of issue 21 (per cell, on the medians): CC_mask at most this much below the sharpened map's ...
CC_MASK_TOLERANCE = 0.02
#: ... and CC_box above the sharpened map's.
METRICS = (("cc_mask", "CC_mask"), ("cc_box", "CC_box"))
VARIANTS = ("average", "sharpened", "enhanced")


def cell_summary(records: list[dict]) -> dict:
    """Medians over a cell's cases of every variant's CC_mask / CC_box, the gains of the enhanced map over the
    sharpened one (difference of the medians), the worst case's CC_mask gain and the acceptance."""
    out: dict = {"n": len(records)}
    if not records:
        return out
    for metric, _ in METRICS:
        for v in VARIANTS:
            out[f"{v}_{metric}"] = float(np.median([r["scores"][v][metric] for r in records]))
        out[f"gain_{metric}"] = out[f"enhanced_{metric}"] - out[f"sharpened_{metric}"]
    out["worst_gain_cc_mask"] = min(r["scores"]["enhanced"]["cc_mask"] - r["scores"]["sharpened"]["cc_mask"]
                                    for r in records)
    out["d_half"] = float(np.median([r["half_fsc0.143_A"] for r in records]))
    out["fsc10"] = float(np.median([r["half_fsc_at_10A"] for r in records]))
    out["noise_signal"] = float(np.median([r["noise_to_signal_std"] for r in records]))
    out["passed"] = bool(out["gain_cc_mask"] >= -CC_MASK_TOLERANCE and out["gain_cc_box"] > 0)
    return out


def _f(v: float, digits: int = 3, sign: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "NA"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


COLUMNS = ("factor", "value", "n", "d (A)", "FSC 10 A", "N/S", "CC_mask avg", "sharp", "enh", "enh - sharp",
           "worst case", "CC_box avg", "sharp", "enh", "enh - sharp", "acceptance")


def _row(s: dict) -> list[str]:
    """A cell's numbers in the order of :data:`COLUMNS` (after factor and value)."""
    return [str(s["n"]), f"{s['d_half']:.2f}", f"{s['fsc10']:.2f}", f"{s['noise_signal']:.2f}",
            *(_f(s[f"{v}_cc_mask"]) for v in VARIANTS), _f(s["gain_cc_mask"], sign=True),
            _f(s["worst_gain_cc_mask"], sign=True), *(_f(s[f"{v}_cc_box"]) for v in VARIANTS),
            _f(s["gain_cc_box"], sign=True), "pass" if s["passed"] else "**FAIL**"]


def table(cells, summaries: dict, typical_key: str) -> list[str]:
    """The report's table: one row per cell (the typical setting's value in bold under every factor)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for c in cells:
        s = summaries[c.name]
        value = f"**{c.label}** (typical)" if c.setting.key() == typical_key else c.label
        cols = _row(s) if s.get("n") else ["0", *[""] * (len(COLUMNS) - 4), "not run"]
        lines.append("| " + " | ".join([c.factor, value, *cols]) + " |")
    return lines


def heat_map(cells, summaries: dict, path: Path) -> Path:
    """Cells x (CC_mask, CC_box) gains of the enhanced over the sharpened map, diverging colours around 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in cells if summaries[c.name].get("n")]
    gains = np.array([[summaries[c.name][f"gain_{m}"] for m, _ in METRICS] for c in rows])
    lim = max(0.05, float(np.nanmax(np.abs(gains)))) if gains.size else 1.0
    fig, ax = plt.subplots(figsize=(5.4, 0.34 * len(rows) + 1.4))
    im = ax.imshow(gains, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(gains):
        ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize=8,
                color="white" if abs(v) > 0.6 * lim else "black")
    ax.set_xticks(range(len(METRICS)), [f"{t}\nenh - sharp" for _, t in METRICS], fontsize=8)
    ax.set_yticks(range(len(rows)), [c.name + ("" if summaries[c.name]["passed"] else "  (fail)") for c in rows],
                  fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.6)
    ax.set_title("Robustness: enhanced minus sharpened (median)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _failures(cells, summaries: dict, failed: list[str]) -> str:
    """The sentence naming the failing cells, counted as rows and as distinct settings (the typical setting
    is a row under every factor)."""
    run = [c for c in cells if summaries[c.name].get("n")]
    settings = {c.setting.key() for c in run}
    bad = {c.setting.key() for c in run if c.name in failed}
    text = (f"**Cells failing the acceptance: {len(bad)} of {len(settings)} distinct settings ({len(failed)} of "
            f"{len(run)} rows)**")
    return text + (f": {', '.join(failed)}." if failed else ".")


def write_report(outdir: Path, cells, records: list[dict], finger: dict, seconds: float, typical) -> Path:
    """Write ``robustness.md`` and ``robustness.png`` into ``outdir`` (``typical``: the sweep's central Setting)."""
    from robustness_gen import MASK_EDGE, MASK_RADIUS, PIXELS_PER_RESOLUTION, TARGET_RESOLUTION

    summaries = {c.name: cell_summary([r for r in records if r["cell"] == c.name]) for c in cells}
    png = heat_map(cells, summaries, outdir / "robustness.png")
    failed = [c.name for c in cells if summaries[c.name].get("n") and not summaries[c.name]["passed"]]
    distinct = {(r["structure"], r["setting"]): r for r in records}
    n_cases, case_seconds = len(distinct), sum(r["seconds"]["total"] for r in distinct.values())
    structures = sorted({r["structure"] for r in records})
    lines = [
        "# Robustness sweep (issue 21, item 5)", "",
        f"Made by `benchmarks/robustness.py` on {datetime.date.today().isoformat()}: {n_cases} distinct cases "
        f"({len(structures)} held-out structures: {', '.join(structures)}), {case_seconds / 60:.0f} min in all (sum "
        f"of the cases' times; this run {seconds / 60:.0f} min) on {os.cpu_count()} CPU cores. Engine "
        f"{finger['engine']}, weights {finger['weights']} (SHA-256 {finger['sha256'][:12]}), configuration changes: "
        f"{finger['set'] or 'none (the default)'}.", "",
        "Half maps from `benchmarks/robustness_gen.py` (not the training simulator, not `noisegen`): model map "
        "blurred by B, independent coloured noise per half set for a half-map FSC of 0.143 at "
        f"max({TARGET_RESOLUTION} A, {PIXELS_PER_RESOLUTION} voxels), optionally a depositor's soft mask "
        f"(atoms + {MASK_RADIUS} A, {MASK_EDGE} A edge), then scale and offset (in standard deviations). "
        f"Typical setting: `{typical.key()}`; each factor changes alone. Per cell: medians over the structures of "
        "CC_mask and CC_box against the model map low-passed at the half-map FSC-0.143 (`d`, median; `FSC 10 A`: "
        "the half maps' FSC at 10 A; `N/S`: the real-space std of one half's noise over the signal's, before mask "
        "and scale; medians), for the "
        "average, RELION-style sharpening (`metrics.auto_sharpen`) and the enhanced map (`enhance_file` on the "
        "two half maps). `enh - sharp` is the difference of the medians; `worst case` the lowest per-structure "
        "CC_mask difference.", "",
        f"Acceptance (issue 21, per cell): enh - sharp >= -{CC_MASK_TOLERANCE} on CC_mask and > 0 on CC_box.", "",
        *table(cells, summaries, typical.key()), "",
        _failures(cells, summaries, failed), "",
        f"![enhanced minus sharpened per cell]({png.name})", "",
    ]
    path = outdir / "robustness.md"
    path.write_text("\n".join(lines))
    return path
