"""Choose what the network sees (``--condition``) and whether the data beyond the limit stay in the molecule's
envelope (``--no-solvent-envelope``), on the TRAIN split only.

Pairs: ``quality.simulated_pairs`` on ``split_train.txt`` with seeds >= 20,000,000 (as ``confidence.py --tune``),
no pseudo-ligands (the model file is then the whole model). The first ``--sim`` pairs are used as the simulator
makes them; the next ``--rising`` pairs keep only the simulator's noise-free signal and get two independent
half-map noises with a power that rises with frequency (``noisegen.coloured_noise(..., "rising")``, std a fixed
multiple of the signal's std), i.e. noise the training simulator never makes.

Per pair and variant (condition x envelope) the average is enhanced as ``deepemhancer -i h1 -i2 h2`` would (limit
at the half-map FSC-0.143) and scored like ``quality.py`` (``evaluate.model_metrics``: masked FSC-0.5, CC_mask,
CC_box, solvent/molecule rms); for the first ``--halves`` pairs of each set the two halves are enhanced too and
the halves check of ``evaluate`` is computed (max FSC gain of the enhanced halves over the raw halves beyond the
raw FSC-0.143). Writes ``condition_tuning.md`` and ``condition_tuning.json`` in ``--outdir``::

    python benchmarks/condition_tune.py --sim 8 --rising 6 --halves 3
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

from quality import SHARED, simulated_pairs  # noqa: E402

from deepemhancer_engine import metrics as M  # noqa: E402
from deepemhancer_engine.evaluate import model_metrics  # noqa: E402
from deepemhancer_engine.io import GridInfo  # noqa: E402

log = logging.getLogger("condition_tune")
TUNE_SEED = 20_000_000
#: Seeds of the rising-noise halves (apart from every simulator seed of the tuning pairs).
RISING_SEED = 21_000_000
#: Rising noise std over the signal's std, per rising pair in turn (half-map resolutions spread over 3-8 A).
RISING_LEVELS = (1.0, 2.0, 4.0)
CONDITIONS = ("none", "lowpass", "fscweight")
METRICS = ("fsc0.5_masked_A", "cc_mask", "cc_box", "solvent_rms_ratio")
#: +1 higher is better, -1 lower is better.
DIRECTION = {"fsc0.5_masked_A": -1, "cc_mask": 1, "cc_box": 1, "solvent_rms_ratio": -1, "halves_gain": -1,
             "halves_gain_env": -1}


@dataclasses.dataclass
class Pair:
    name: str
    kind: str  # "sim" | "rising"
    half1: np.ndarray
    half2: np.ndarray
    grid: GridInfo
    model: Path
    note: str


def tuning_pairs(n_sim: int, n_rising: int, structures: Path, max_box: float):
    """The first ``n_sim`` train-split pairs as simulated, then ``n_rising`` more with rising-noise halves."""
    from deepemhancer_engine.noisegen import coloured_noise

    source = simulated_pairs(n_sim + n_rising, structures, max_box, split="split_train.txt", seed0=TUNE_SEED,
                             ligands=False)
    for k, (name, path, seed, pair) in enumerate(source):
        grid = GridInfo(shape=pair.half1.shape, voxel_size=tuple(pair.voxel_size), origin=tuple(pair.origin))
        vs = f"{pair.voxel_size[0]:.2f} A/px"
        if k < n_sim:
            yield Pair(name, "sim", pair.half1, pair.half2, grid, path, f"seed {seed}, {vs}")
            continue
        j = k - n_sim
        level = RISING_LEVELS[j % len(RISING_LEVELS)]
        signal = pair.signal
        std = level * float(np.std(signal))
        halves = [signal + coloured_noise(signal.shape, pair.voxel_size, "rising", RISING_SEED + 2 * j + i, std=std)
                  for i in (0, 1)]
        yield Pair(name, "rising", halves[0], halves[1], grid, path,
                   f"signal of seed {seed}, rising noise {level:g}x, {vs}")


def halves_check(pair: Pair, config, loaded, curve) -> dict:
    """``evaluate``'s halves check: the enhanced halves' max FSC gain over the raw halves beyond the raw
    FSC-0.143, against the raw halves as they are and inside the envelopes the data come back in."""
    from deepemhancer_engine.pipeline import data_envelope, enhance
    from deepemhancer_engine.postprocess import limit_resolution

    vs, d = pair.grid.voxel_size, curve.resolution(0.143)
    halves = (pair.half1, pair.half2)
    e1, e2 = (enhance(h, vs, config=config, model=loaded, resolution=d, fsc=curve) for h in halves)
    ce = M.fsc(e1, e2, vs)
    env = [data_envelope(h, vs, config=config, model=loaded, resolution=d, fsc=curve) for h in halves]
    ref = curve if env[0] is None or env[1] is None else M.fsc(
        *(limit_resolution(h, h, vs, d, envelope=e)[0] for h, e in zip(halves, env)), vs)
    return {"halves_gain": M.max_fsc_gain(ce, curve, d), "halves_gain_env": M.max_fsc_gain(ce, ref, d)}


def score_pair(pair: Pair, loaded, base, halves: bool) -> dict:
    """Every variant of one pair: ``{variant: {metric: value}}`` and the pair's d_half."""
    from deepemhancer_engine.pipeline import enhance, half_map_fsc

    vs = pair.grid.voxel_size
    curve = half_map_fsc(pair.half1, pair.half2, vs)
    d = curve.resolution(0.143)
    average = 0.5 * (pair.half1 + pair.half2)
    maps, found = {}, {}
    for cond in CONDITIONS:
        for env in (False, True):
            config = dataclasses.replace(base, condition=cond, solvent_envelope=env)
            name = f"{cond}{'+env' if env else ''}"
            maps[name] = enhance(average, vs, config=config, model=loaded, resolution=d, fsc=curve)
            if halves:
                found[name] = halves_check(pair, config, loaded, curve)
    maps["average"] = average
    scores = model_metrics(maps, pair.model, pair.grid, d, input_map=average)
    for name, values in scores.items():
        found.setdefault(name, {}).update({m: float(values[m]) for m in METRICS})
    return {"name": pair.name, "kind": pair.kind, "note": pair.note, "d_half": d, "variants": found}


def medians(rows: list[dict], kind: str | None) -> dict:
    """Median per variant and metric over the rows of ``kind`` (None: all)."""
    chosen = [r for r in rows if kind is None or r["kind"] == kind]
    out: dict[str, dict[str, float]] = {}
    for r in chosen:
        for variant, values in r["variants"].items():
            for metric, v in values.items():
                out.setdefault(variant, {}).setdefault(metric, []).append(v)
    return {v: {m: statistics.median(x for x in vals if np.isfinite(x)) if any(np.isfinite(vals)) else float("nan")
                for m, vals in ms.items()} for v, ms in out.items()}


def report(rows: list[dict], meta: dict) -> str:
    variants = list(rows[0]["variants"])
    cols = [*METRICS, "halves_gain", "halves_gain_env"]
    lines = ["# Conditioning and solvent envelope: tuning on the train split", "",
             f"Generated by `benchmarks/condition_tune.py` on {meta['made']}: {meta['pairs']} pairs of "
             f"`split_train.txt` (seeds >= {TUNE_SEED:,}), weights {meta['weights']}, {meta['seconds']:.0f} s "
             f"({meta['machine']}).", "",
             "Variants: condition (`none`: the data as they are, the former behaviour; `lowpass`: low-passed at "
             "d_half; `fscweight`: FSC-weighted, then low-passed) and `+env`: the data beyond the limit only inside "
             "the molecule's envelope. `average`: the raw average (reference). halves_gain: max FSC gain of the "
             "independently enhanced halves over the raw halves beyond the raw FSC-0.143 (first pairs of each set "
             "only; <= ~0 is honest); halves_gain_env: the same over the raw halves put through the resolution limit "
             "inside their own envelopes (the like-for-like reference).", ""]
    for kind, title in (("sim", "Simulator's pairs"), ("rising", "Rising-noise halves"), (None, "All pairs")):
        med = medians(rows, kind)
        if not med:
            continue
        n = sum(1 for r in rows if kind is None or r["kind"] == kind)
        lines += [f"## {title}: medians over {n} pairs", "", "| variant | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for v in variants:
            vals = med.get(v, {})
            lines.append(f"| {v} | " + " | ".join(_fmt(vals.get(c, float("nan"))) for c in cols) + " |")
        lines.append("")
    lines += ["## Per pair", "", "| pair | set | d_half (A) | variant | " + " | ".join(cols) + " | note |",
              "|---" * (len(cols) + 5) + "|"]
    for r in rows:
        for v, vals in r["variants"].items():
            lines.append(f"| {r['name']} | {r['kind']} | {r['d_half']:.2f} | {v} | "
                         + " | ".join(_fmt(vals.get(c, float("nan"))) for c in cols) + f" | {r['note']} |")
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return "NA" if not np.isfinite(v) else f"{v:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", type=int, default=8, help="simulator's pairs (default 8)")
    ap.add_argument("--rising", type=int, default=6, help="rising-noise pairs (default 6)")
    ap.add_argument("--halves", type=int, default=3, help="halves check on the first N pairs of each set")
    ap.add_argument("--max-box", type=float, default=96.0)
    ap.add_argument("--structures", default=str(SHARED / "structures"))
    ap.add_argument("--outdir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--machine", default="2-core CPU shared with other jobs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("deepemhancer_engine").setLevel(logging.WARNING)
    from deepemhancer_engine.config import EnhanceConfig
    from deepemhancer_engine.pipeline import load

    base = EnhanceConfig()
    loaded = load(base)
    t0, rows, seen = time.perf_counter(), [], {"sim": 0, "rising": 0}
    for pair in tuning_pairs(args.sim, args.rising, Path(args.structures), args.max_box):
        t1 = time.perf_counter()
        rows.append(score_pair(pair, loaded, base, halves=seen[pair.kind] < args.halves))
        seen[pair.kind] += 1
        log.info("%s (%s, d %.2f A) in %.0f s: %s", pair.name, pair.kind, rows[-1]["d_half"], time.perf_counter() - t1,
                 "; ".join(f"{v} cc_mask {x['cc_mask']:.3f} solvent {x['solvent_rms_ratio']:.3f}"
                           for v, x in rows[-1]["variants"].items()))
    meta = {"made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "pairs": len(rows),
            "weights": loaded.weights_path.name, "seconds": time.perf_counter() - t0, "machine": args.machine}
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "condition_tuning.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (outdir / "condition_tuning.md").write_text(report(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
