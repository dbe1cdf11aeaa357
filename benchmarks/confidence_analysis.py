"""What limits the confidence map's block ranking (issue 22)? Train-split analysis on cached pairs.

Reads the pairs that ``benchmarks/confidence.py --cache DIR`` keeps (``confidence.load_run``: enhanced map,
enhanced and raw halves, model map, molecule, patch regions) and ranks each pair's molecule blocks (7 A cubes at
least half inside the molecule, as ``confidence.calibration``) by candidate scores, each against the gate's target:
the block CC of the enhanced map with the model map. Per candidate: the median Spearman over pairs, its difference
from the naive answer's (raw halves' block CC), the pairs where it beats the naive answer, and, for per-voxel maps,
the patch/core ratio of medians and the pure-noise median. Three kinds of candidate:

- block-exact: a statistic computed inside exactly the benchmark's blocks (what the naive answer is); it cannot be
  a per-voxel map without fixing the block grid;
- per-voxel: a map, averaged over each block as the confidence is; ``current`` is the engine's confidence;
- oracle (uses the model map; not a candidate): the ceiling a smooth per-voxel map can reach on this target.

Also the target's own stability: its Spearman with the same target on a block grid shifted by 1, 2 and half an edge
(painted back on voxels and averaged over the original blocks).

    python benchmarks/confidence_analysis.py --cache /tmp/ctune_cache --out benchmarks/results/confidence_analysis.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.stats import rankdata, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from confidence import load_run  # noqa: E402

from deepemhancer_engine.confidence import (  # noqa: E402
    BLOCK_EDGE,
    DEFAULT_PARAMS,
    _band_response,
    block_cc,
    blocks,
    confidence_map,
)
from deepemhancer_engine.fourier import frequency_grid  # noqa: E402
from deepemhancer_engine.normalize import estimate_noise  # noqa: E402

NO_NOISE_RULE = DEFAULT_PARAMS.__class__(sigmas=0.0)


def band(x: np.ndarray, voxel: float, d: float, high: float = 1.0, low: float = np.inf) -> np.ndarray:
    """``x`` band-passed to ``[low * d, high * d]`` (A) with the confidence's own band response."""
    resp = _band_response(frequency_grid(x.shape, (voxel,) * 3, np.float32), d, low, high)
    return scipy.fft.irfftn(scipy.fft.rfftn(x) * resp, s=x.shape).astype(np.float32)


def local_cc(a: np.ndarray, b: np.ndarray, smooth) -> np.ndarray:
    """Sliding-window Pearson CC of ``a`` and ``b`` (``smooth``: the window as a filter)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ma, mb = smooth(a), smooth(b)
    c = smooth(a * b) - ma * mb
    v = np.maximum(smooth(a * a) - ma * ma, 0) * np.maximum(smooth(b * b) - mb * mb, 0)
    return c / np.sqrt(v + 1e-12 * v.mean() + 1e-30)


def local_resolution(x1, x2, voxel: float, d: float, threshold: float = 0.5) -> np.ndarray:
    """``1 / k`` for the finest band ``[1.3 k d, k d]`` (``k`` from 2 to 0.65, above Nyquist) where the halves' local
    CC (Gaussian window of sigma ``0.6 d``) exceeds ``threshold``; 0 where none does."""
    out = np.zeros(np.shape(x1))
    for k in (2.0, 1.5, 1.2, 1.0, 0.8, 0.65):
        if k * d >= 2.05 * voxel:
            cc = local_cc(band(x1, voxel, d, k, 1.3 * k), band(x2, voxel, d, k, 1.3 * k), gauss(0.6 * d, voxel))
            out = np.where(cc > threshold, 1.0 / k, out)
    return out


def gauss(sigma_A: float, voxel: float):
    return lambda x: ndimage.gaussian_filter(x, sigma_A / voxel, mode="wrap")


def box(n: int):
    return lambda x: ndimage.uniform_filter(x, n, mode="wrap")


def block_exact(run, edge: int) -> dict[str, np.ndarray]:
    """Statistics inside exactly the benchmark's blocks (model-free)."""
    e1, e2 = run.halves
    h1, h2 = run.raw
    lp = [band(x, run.voxel, run.d_half) for x in (e1, e2, h1, h2)]
    mean, std = estimate_noise(run.enhanced, masked_rule=False)
    above = (blocks(run.enhanced, edge) > mean + 3 * std).mean(1)  # share of the block above the contour
    out = {"naive (raw halves)": block_cc(h1, h2, edge), "raw halves, low-passed at d": block_cc(lp[2], lp[3], edge),
           "enhanced halves": block_cc(e1, e2, edge), "enhanced halves, low-passed at d": block_cc(lp[0], lp[1], edge),
           "enhanced half vs other raw half": 0.5 * (block_cc(e1, h2, edge) + block_cc(e2, h1, edge)),
           "enhanced vs raw average": block_cc(run.enhanced, h1 + h2, edge),
           "geometry: share below contour": 1.0 - above, "mean enhanced density": blocks(run.enhanced, edge).mean(1)}
    out["enhanced halves x (half vs other raw)+"] = (out["enhanced halves"]
                                                    * np.clip(out["enhanced half vs other raw half"], 0, None))
    out["geometry + enhanced halves (ranks)"] = rankdata(out["enhanced halves"]) - rankdata(above)
    return out


def per_voxel(run, edge: int) -> dict[str, np.ndarray]:
    """Model-free maps, averaged per block like the confidence."""
    e1, e2 = run.halves
    h1, h2 = run.raw
    v, d = run.voxel, run.d_half
    out = {"current": confidence_map(e1, e2, v, d, DEFAULT_PARAMS),
           "current without the noise rule (0 sigmas)": confidence_map(e1, e2, v, d, NO_NOISE_RULE),
           "raw halves, box of the block's size": local_cc(h1, h2, box(edge)),
           "enhanced halves, box of the block's size": local_cc(e1, e2, box(edge))}
    for w in (1.5, 2.0, 3.0):
        out[f"enhanced halves, gauss {w:g} A"] = local_cc(e1, e2, gauss(w, v))
    cross = 0.5 * (local_cc(e1, h2, gauss(2.0, v)) + local_cc(e2, h1, gauss(2.0, v)))
    out["enhanced half vs other raw half, gauss 2 A"] = cross
    out["enhanced halves x (half vs other raw)+, gauss 2 A"] = out["enhanced halves, gauss 2 A"] * np.clip(cross, 0, 1)
    out["local resolution of the raw halves (cc > 0.5)"] = local_resolution(h1, h2, v, d)
    out["local resolution of the enhanced halves (cc > 0.5)"] = local_resolution(e1, e2, v, d)
    out["cross-validated CC(enhanced, truth), gauss 2 A"] = cross_validated_cc(e1, e2, h1, h2, gauss(2.0, v))
    mean, std = estimate_noise(run.enhanced, masked_rule=False)
    surface = 1.0 - box(edge)((run.enhanced > mean + 3 * std).astype(np.float32))
    out["geometry: share below contour, box"] = surface
    out["current x geometry (surface cue)"] = out["current"] * surface
    return out


def cross_validated_cc(e1, e2, h1, h2, smooth) -> np.ndarray:
    """Model-free estimate of the enhanced map's local CC with the truth: ``cov(e1, h2)`` and ``cov(e2, h1)`` are
    unbiased for ``cov(e, T)`` (each enhanced half never saw the other raw half), ``cov(h1, h2)`` for ``var(T)``
    (floored at 5 % of its mean magnitude)."""
    e1, e2, h1, h2 = (np.asarray(x, np.float64) for x in (e1, e2, h1, h2))

    def cov(a, b):
        return smooth(a * b) - smooth(a) * smooth(b)

    signal = cov(h1, h2)
    signal = np.maximum(signal, 0.05 * np.abs(signal).mean())
    return 0.5 * (cov(e1, h2) + cov(e2, h1)) / np.sqrt(0.5 * (cov(e1, e1) + cov(e2, e2)) * signal)


def oracle(run, edge: int) -> dict[str, np.ndarray]:
    """Smooth maps that use the model map (how far a per-voxel map can rank this target), and the block's share of
    the molecule (model mask)."""
    out = {f"ORACLE local CC(enhanced, model), gauss {w:g} A": local_cc(run.enhanced, run.model_map,
                                                                        gauss(w, run.voxel)) for w in (1.0, 2.0, 4.0)}
    out["ORACLE block's share of the molecule"] = blocks(run.molecule.astype(np.float32), edge).mean(1)
    return out


def paint(values: np.ndarray, shape, edge: int, shift: int) -> np.ndarray:
    """Block values of a grid shifted by ``shift`` voxels on every axis, painted back on the voxels."""
    nz, ny, nx = (n // edge for n in shape)
    v = values.reshape(nz, ny, nx).repeat(edge, 0).repeat(edge, 1).repeat(edge, 2)
    out = np.zeros(shape, np.float32)
    out[: v.shape[0], : v.shape[1], : v.shape[2]] = v
    return np.roll(out, (shift,) * 3, (0, 1, 2))


def target_stability(run, edge: int, keep: np.ndarray, target: np.ndarray) -> dict[str, float]:
    out = {}
    for label, shift in (("1 voxel", 1), ("2 voxels", 2), ("half a block", edge // 2)):
        moved = [np.roll(x, (-shift,) * 3, (0, 1, 2)) for x in (run.enhanced, run.model_map)]
        painted = paint(block_cc(*moved, edge), run.enhanced.shape, edge, shift)
        out[f"target on a grid shifted {label} (each axis)"] = float(
            spearmanr(blocks(painted, edge).mean(1)[keep], target).statistic)
    e1 = run.halves[0]
    out["target with one enhanced half (e1) instead of the average"] = float(
        spearmanr(block_cc(e1, run.model_map, edge)[keep], target).statistic)
    return out


def score_pair(run) -> dict:
    edge = max(2, round(BLOCK_EDGE / run.voxel))
    if run.model_map is None:
        return {"noise": {k: float(np.median(c)) for k, c in per_voxel(run, edge).items()}}
    inside = blocks(run.molecule.astype(np.float32), edge).mean(1)
    keep, interior = inside >= 0.5, inside >= 0.95
    full_target = block_cc(run.enhanced, run.model_map, edge)
    target = full_target[keep]
    patch = run.regions["smeared"] | run.regions["weak"]
    rows = {}
    for kind, cands in (("block-exact", block_exact(run, edge)), ("per-voxel", per_voxel(run, edge)),
                        ("oracle", oracle(run, edge))):
        for name, c in cands.items():
            per_block = blocks(c, edge).mean(1) if c.ndim == 3 else c
            row = {"kind": kind, "spearman": float(spearmanr(per_block[keep], target).statistic)}
            if np.count_nonzero(interior) >= 10:  # blocks wholly inside: no solvent-boundary contrast
                row["interior"] = float(spearmanr(per_block[interior], full_target[interior]).statistic)
            if c.ndim == 3 and np.count_nonzero(patch) >= 5:
                core = float(np.median(c[run.regions["core"]]))
                row["patch_ratio"] = float(np.median(c[patch])) / core if core > 0 else float("nan")
            if c.ndim == 3:
                row["core"] = float(np.median(c[run.regions["core"]]))
            rows[name] = row
    return {"candidates": rows, "target": target_stability(run, edge, keep, target),
            "blocks": int(keep.sum()), "interior_blocks": int(interior.sum())}


def _median(values) -> float | None:
    return float(np.median(values)) if len(values) else None


def summary_row(name: str, sims: list[dict], noise: list[dict]) -> dict:
    """One candidate's medians over pairs (module text); ``interior``: on the pairs with 10+ interior blocks."""
    got = [v["candidates"][name] for v in sims]
    naive = [v["candidates"]["naive (raw halves)"] for v in sims]
    s = np.array([g["spearman"] for g in got])
    s_naive = np.array([g["spearman"] for g in naive])
    inner = [(g["interior"], n["interior"]) for g, n in zip(got, naive) if "interior" in g]
    row = {"candidate": name, "kind": got[0]["kind"], "pairs": len(s), "spearman": float(np.median(s)),
           "minus_naive": float(np.median(s) - np.median(s_naive)), "beats_naive": int((s > s_naive).sum()),
           "interior_pairs": len(inner), "interior": _median([a for a, _ in inner])}
    if inner:
        row["interior_minus_naive"] = row["interior"] - _median([b for _, b in inner])
    row["patch_ratio"] = _median([g["patch_ratio"] for g in got if np.isfinite(g.get("patch_ratio", np.nan))])
    row["core"] = _median([g["core"] for g in got if "core" in g])
    row["noise_median"] = _median([n[name] for n in noise if name in n])
    return row


def table(per: dict) -> list[dict]:
    sims = [v for v in per.values() if "candidates" in v]
    noise = [v["noise"] for v in per.values() if "noise" in v]
    rows = [summary_row(name, sims, noise) for name in sims[0]["candidates"]]
    for key in sims[0]["target"]:
        rows.append({"candidate": key, "kind": "target", "spearman": _median([v["target"][key] for v in sims])})
    return rows


COLUMNS = (("spearman", "spearman"), ("minus_naive", "-naive"), ("beats_naive", "wins"), ("interior", "inner"),
           ("patch_ratio", "patch"), ("core", "core"), ("noise_median", "noise"))


def print_table(rows: list[dict]) -> None:
    print(f"{'candidate':52s} {'kind':11s} " + " ".join(f"{h:>8s}" for _, h in COLUMNS))
    for r in rows:
        cells = ("" if r.get(k) is None else f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k])
                 for k, _ in COLUMNS)
        print(f"{r['candidate'][:52]:52s} {r['kind']:11s} " + " ".join(f"{c:>8s}" for c in cells))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", required=True, help="the train split's cache (benchmarks/confidence.py --tune --cache)")
    ap.add_argument("--out", help="write the per-pair figures and the table here (.json)")
    args = ap.parse_args(argv)
    per = {}
    for p in sorted(Path(args.cache).glob("*.npz")):
        run = load_run(p)
        per[run.name] = score_pair(run)
    rows = table(per)
    print_table(rows)
    if args.out:
        Path(args.out).write_text(json.dumps({"cache": args.cache, "table": rows, "pairs": per}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
