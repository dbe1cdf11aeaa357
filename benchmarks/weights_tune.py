"""Choose between weights files on the TRAIN split only (issue 21, item 3: a fine-tune against the shipped default).

Pairs: those of ``condition_tune.py`` (``split_train.txt``, seeds >= 20,000,000): the first ``--sim`` as the
training simulator makes them, the next ``--rising`` with two independent half-map noises whose power rises with
frequency; ``--masked`` of the first pairs also masked as depositors mask a map and enhanced as one map
with the defaults (no resolution: the real maps' gate). Each pair's average is enhanced with each ``--weights``
file exactly as ``deepemhancer -i h1 -i2 h2`` enhances it (default configuration, limit at the half-map
FSC-0.143, the halves' FSC curve) and scored like
``quality.py`` (``evaluate.model_metrics``) beside the average and the RELION-style sharpened map. Writes
``weights_tuning.md`` / ``.json`` in ``--outdir``::

    python benchmarks/weights_tune.py --weights deepemhancer_engine/weights/tightTarget.pt \\
        new/tightTarget.pt
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from condition_tune import TUNE_SEED, tuning_pairs  # noqa: E402
from quality import SHARED  # noqa: E402

from deepemhancer_engine.evaluate import CLASSICAL, best_classical, gain_over, model_metrics  # noqa: E402
from deepemhancer_engine.metrics import sharpen_average  # noqa: E402

log = logging.getLogger("weights_tune")
METRICS = ("fsc0.5_masked_A", "cc_mask", "cc_box", "solvent_rms_ratio")


def score(args) -> tuple[list[dict], list[str]]:
    from deepemhancer_engine.config import EnhanceConfig
    from deepemhancer_engine.pipeline import enhance, half_map_fsc, load

    names, models = [], []
    for i, path in enumerate(args.weights):
        config = dataclasses.replace(EnhanceConfig(), weights=Path(path))
        models.append((config, load(config)))
        names.append(f"w{i}:{Path(path).parent.name}/{Path(path).name}")
    rows = []
    for pair in tuning_pairs(args.sim, args.rising, Path(args.structures), args.max_box):
        vs = pair.grid.voxel_size
        curve = half_map_fsc(pair.half1, pair.half2, vs)
        d = curve.resolution(0.143)
        average = 0.5 * (pair.half1 + pair.half2)
        maps = {"average": average, "sharpened": sharpen_average(average, vs, d, curve)[0]}
        for name, (config, loaded) in zip(names, models):
            maps[name] = enhance(average, vs, config=config, model=loaded, resolution=d, fsc=curve)
        scores = model_metrics(maps, pair.model, pair.grid, d, input_map=average)
        rows.append({"name": pair.name, "kind": pair.kind, "d_half": d,
                     "maps": {m: {k: float(v[k]) for k in METRICS} for m, v in scores.items()}})
        log.info("%s (%s, d %.2f): %s", pair.name, pair.kind, d,
                 ", ".join(f"{m} {rows[-1]['maps'][m]['cc_mask']:.3f}" for m in maps))
        if pair.kind == "sim" and sum(r["kind"] == "masked" for r in rows) < args.masked:
            rows.append(_masked_single(pair, average, d, names, models))
    return rows, names


def _masked_single(pair, average, d, names, models) -> dict:
    """The pair's average masked as depositors mask a map (model atoms + 6 A, 6 A soft edge: flat solvent)
    and enhanced as one map with the defaults, no resolution given (the real maps' gate); the masked map itself
    is the 'average' it is compared with, sharpened at d for the other classical map."""
    from deepemhancer_engine.modelmap import model_mask, read_model
    from deepemhancer_engine.pipeline import enhance

    vs = pair.grid.voxel_size
    masked = average * model_mask(read_model(pair.model), pair.grid, 6.0, soft_edge=6.0)
    maps = {"average": masked, "sharpened": sharpen_average(masked, vs, d, None)[0]}
    for name, (config, loaded) in zip(names, models):
        maps[name] = enhance(masked, vs, config=config, model=loaded)
    scores = model_metrics(maps, pair.model, pair.grid, d, input_map=masked)
    return {"name": pair.name, "kind": "masked", "d_half": d,
            "maps": {m: {k: float(v[k]) for k in METRICS} for m, v in scores.items()}}


def report(rows: list[dict], names: list[str], meta: dict) -> str:
    lines = ["# Weights on the train split (issue 21, item 3)", "", f"`{meta['command']}`: {len(rows)} pairs of "
             f"`split_train.txt` (seeds from {TUNE_SEED}; {meta['counts']}), {meta['seconds'] / 60:.0f} min on "
             f"{meta['machine']}. Per metric: median over pairs of the gain over the best classical map of that "
             "pair set (the better of average and sharpened by median), positive = better; worst pair in brackets.",
             ""]
    for kind in ("sim", "rising", "masked", None):
        chosen = [r for r in rows if kind is None or r["kind"] == kind]
        if not chosen:
            continue
        lines += [f"## {kind or 'all'} ({len(chosen)} pairs)", "",
                  "| weights | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for name in names:
            cells = []
            for k in METRICS:
                med = {c: statistics.median(r["maps"][c][k] for r in chosen) for c in CLASSICAL}
                best = best_classical(med, k)
                gains = [gain_over(r["maps"][name][k], r["maps"][best][k], k) for r in chosen]
                cells.append(f"{statistics.median(gains):+.3f} ({min(gains):+.3f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", required=True, help="weights files (.pt with the card beside)")
    ap.add_argument("--sim", type=int, default=6)
    ap.add_argument("--rising", type=int, default=6)
    ap.add_argument("--masked", type=int, default=4, help="of the sim pairs, masked and run as one map")
    ap.add_argument("--max-box", type=float, default=96.0)
    ap.add_argument("--structures", default=str(SHARED / "structures"))
    ap.add_argument("--outdir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--machine", default="2-core CPU")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("deepemhancer_engine").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    rows, names = score(args)
    counts = ", ".join(f"{sum(r['kind'] == k for r in rows)} {k}" for k in ("sim", "rising", "masked"))
    meta = {"command": "python benchmarks/weights_tune.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "counts": counts, "seconds": time.perf_counter() - t0, "machine": args.machine, "weights": names}
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights_tuning.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "weights_tuning.md").write_text(report(rows, names, meta))
    print((out / "weights_tuning.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
