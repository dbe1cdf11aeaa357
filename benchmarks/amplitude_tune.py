"""Choose the enhanced map's shell amplitudes (``--no-match-amplitudes``) on the TRAIN split only.

Pairs: those of ``condition_tune.py`` (``split_train.txt``, seeds >= 20,000,000): the first ``--sim`` as the
training simulator makes them, the next ``--rising`` with two independent half-map noises whose power rises with
frequency (noise the simulator never makes). Each pair is enhanced once with the shell amplitudes left as the
network returns them (the former default: ``--no-match-amplitudes``); every variant below is made from that map,
the classical map and the envelope, and scored like ``quality.py`` (``evaluate.model_metrics``):

- ``network``: the network's amplitudes (the former default);
- ``matched``: :func:`postprocess.match_amplitudes` to the classical map (the FSC-weighted, Guinier-sharpened
  average low-passed at the limit, ``metrics.sharpen_average``) inside the molecule's envelope (the default now:
  the same arrays as ``enhance`` with the default configuration); the envelope's product leaves the low-passed
  reference some power beyond ``d``, so the limit's data there come back damped;
- ``matched, cut beyond d``: the same with every shell beyond ``1/d`` + one shell set to 0 (``resolution=d``);
- ``matched, no FSC weighting``: matched to the classical map made without the FSC weighting (Guinier
  sharpening and low-pass only, as for one map with ``--resolution``);
- ``matched up to d``: the matched gain up to 1/d, the former output beyond (the data beyond the limit kept);
- ``blend 0.5``: half the former output, half the classical map in the envelope scaled to it;
- ``classical`` and ``average``: the references (best classical per metric is the better of the two).

Writes ``amplitude_tuning.md`` and ``amplitude_tuning.json`` in ``--outdir``::

    python benchmarks/amplitude_tune.py --sim 6 --rising 6
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from condition_tune import TUNE_SEED, tuning_pairs  # noqa: E402
from quality import SHARED  # noqa: E402

from deepemhancer_engine import metrics as M  # noqa: E402
from deepemhancer_engine.evaluate import model_metrics  # noqa: E402
from deepemhancer_engine.postprocess import apply_shell_gain, match_amplitudes  # noqa: E402

log = logging.getLogger("amplitude_tune")
METRICS = ("fsc0.5_masked_A", "cc_mask", "cc_box", "solvent_rms_ratio")
VARIANTS = ("network", "matched", "matched, cut beyond d", "matched, no FSC weighting", "matched up to d", "blend 0.5",
            "classical", "average")


def variants(pair, loaded, base) -> tuple[dict[str, np.ndarray], float]:
    """Every variant's map of one pair and the pair's d_half."""
    from deepemhancer_engine.pipeline import data_envelope, enhance, half_map_fsc

    vs = pair.grid.voxel_size
    curve = half_map_fsc(pair.half1, pair.half2, vs)
    d = curve.resolution(0.143)
    average = 0.5 * (pair.half1 + pair.half2)
    plain = dataclasses.replace(base, match_amplitudes=False)
    network = enhance(average, vs, config=plain, model=loaded, resolution=d, fsc=curve)
    envelope = data_envelope(average, vs, config=base, model=loaded, resolution=d, fsc=curve)
    classical, _ = M.sharpen_average(average, vs, d, curve)
    matched, gain = match_amplitudes(network, classical, vs, weight=envelope)
    cut, _ = match_amplitudes(network, classical, vs, weight=envelope, resolution=d)
    unweighted, _ = match_amplitudes(network, M.sharpen_average(average, vs, d, None)[0], vs, weight=envelope)
    nz, ny, nx = average.shape
    width = 1.0 / max(nx * vs[0], ny * vs[1], nz * vs[2])
    kept = gain.copy()
    kept[np.arange(len(gain)) * width > 1.0 / d] = 1.0
    w = np.ones_like(average) if envelope is None else envelope
    scale = float((network * classical * w).sum() / max(float((classical * classical * w).sum()), 1e-30))
    maps = {"network": network, "matched": matched, "matched, cut beyond d": cut, "matched, no FSC weighting": unweighted,
            "matched up to d": apply_shell_gain(network, kept, vs),
            "blend 0.5": 0.5 * network + 0.5 * scale * classical * w, "classical": classical, "average": average}
    return maps, d


def medians(rows: list[dict], kind: str | None) -> dict:
    chosen = [r for r in rows if kind is None or r["kind"] == kind]
    out = {v: {m: statistics.median(r["scores"][v][m] for r in chosen) for m in METRICS} for v in VARIANTS}
    for v in VARIANTS:  # against the better classical map of each pair, and the worst pair on CC_mask
        out[v]["cc_mask - best"] = statistics.median(r["scores"][v]["cc_mask"] - _best(r, "cc_mask") for r in chosen)
        out[v]["worst cc_mask - best"] = min(r["scores"][v]["cc_mask"] - _best(r, "cc_mask") for r in chosen)
        out[v]["fsc0.5 - best"] = statistics.median(r["scores"][v]["fsc0.5_masked_A"] - _best(r, "fsc0.5_masked_A")
                                                    for r in chosen)
    return out


def _best(row: dict, metric: str) -> float:
    vals = [row["scores"][v][metric] for v in ("classical", "average")]
    return min(vals) if metric == "fsc0.5_masked_A" else max(vals)


def report(rows: list[dict], meta: dict) -> str:
    cols = [*METRICS, "cc_mask - best", "worst cc_mask - best", "fsc0.5 - best"]
    lines = ["# Shell amplitudes: tuning on the train split", "",
             f"Generated by `benchmarks/amplitude_tune.py` on {meta['made']}: {meta['pairs']} pairs of "
             f"`split_train.txt` (seeds >= {TUNE_SEED:,}), weights {meta['weights']}, {meta['seconds']:.0f} s "
             f"({meta['machine']}). Variants: module docstring. `- best`: against the better of the classical map "
             "and the average on that pair (lower is better for FSC-0.5 in A); `worst`: the lowest pair.", ""]
    for kind, title in (("sim", "Simulator's pairs"), ("rising", "Rising-noise halves"), (None, "All pairs")):
        n = sum(1 for r in rows if kind is None or r["kind"] == kind)
        if not n:
            continue
        med = medians(rows, kind)
        lines += [f"## {title}: medians over {n} pairs", "", "| variant | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        lines += [f"| {v} | " + " | ".join(f"{med[v][c]:.3f}" for c in cols) + " |" for v in VARIANTS]
        lines.append("")
    lines += ["## Per pair (CC_mask / CC_box / masked FSC-0.5 A)", "",
              "| pair | set | d_half (A) | " + " | ".join(VARIANTS) + " |", "|---" * (len(VARIANTS) + 3) + "|"]
    for r in rows:
        cells = (r["scores"][v] for v in VARIANTS)
        lines.append(f"| {r['name']} | {r['kind']} | {r['d_half']:.2f} | " + " | ".join(
            f"{s['cc_mask']:.3f} / {s['cc_box']:.3f} / {s['fsc0.5_masked_A']:.2f}" for s in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", type=int, default=6, help="simulator's pairs (default 6)")
    ap.add_argument("--rising", type=int, default=6, help="rising-noise pairs (default 6)")
    ap.add_argument("--max-box", type=float, default=96.0)
    ap.add_argument("--structures", default=str(SHARED / "structures"))
    ap.add_argument("--outdir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--machine", default="2-core CPU")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("deepemhancer_engine").setLevel(logging.ERROR)
    from deepemhancer_engine.config import EnhanceConfig
    from deepemhancer_engine.pipeline import load

    base = EnhanceConfig()
    loaded = load(base)
    t0, rows = time.perf_counter(), []
    for pair in tuning_pairs(args.sim, args.rising, Path(args.structures), args.max_box):
        maps, d = variants(pair, loaded, base)
        scores = model_metrics(maps, pair.model, pair.grid, d, input_map=maps["average"])
        rows.append({"name": pair.name, "kind": pair.kind, "note": pair.note, "d_half": d,
                     "scores": {v: {m: float(scores[v][m]) for m in METRICS} for v in VARIANTS}})
        log.info("%s (%s, d %.2f A): %s", pair.name, pair.kind, d,
                 "; ".join(f"{v} {rows[-1]['scores'][v]['cc_mask']:.3f}" for v in VARIANTS))
    meta = {"made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "pairs": len(rows),
            "weights": loaded.weights_path.name, "seconds": time.perf_counter() - t0, "machine": args.machine}
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "amplitude_tuning.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (outdir / "amplitude_tuning.md").write_text(report(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
