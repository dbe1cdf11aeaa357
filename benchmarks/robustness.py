"""Robustness sweep: the default enhancement on half maps made by another simulator, one factor at a time.

Issue 21: on independently simulated half maps (noise rising with frequency, strong blur, masks, arbitrary
scale and offset) the enhanced map could be far worse than plain sharpening, and the quality benchmark,
whose simulator's noise falls with frequency, could not see it. Here the pairs come from
``robustness_gen.py`` (not the training simulator, not ``noisegen``); around a typical setting
(:data:`TYPICAL`: white noise, B 70 A^2, 1.0 A voxels, scale 1, unmasked) one factor changes at a time
(:data:`FACTORS`: 6 noise colours, 4 B-factors, 4 pixel sizes, 3 scale/offset pairs, masked or not). Each
cell runs the first ``--limit`` held-out structures (``split_eval.txt``) that fit the box (``--max-extent``);
per case, as a user with two half maps gets them:

* ``average`` of the halves; ``sharpened``: :func:`metrics.auto_sharpen` (RELION-style, as ``evaluate``);
* ``enhanced``: :func:`deepemhancer_engine.enhance_file` on the two half maps written as MRC files, with the
  default :class:`EnhanceConfig` (``--engine-set KEY=VALUE`` changes it, ``--weights`` the weights);

each scored with :func:`evaluate.model_metrics` (CC_mask, CC_box, ...) against the model map low-passed at
the half-map FSC-0.143, as ``evaluate`` does. Per-case results go to ``robustness.jsonl`` (one JSON line per
case; a rerun with the same engine resumes), the report to ``robustness.md`` and ``robustness.png``
(``robustness_report.py``)::

    python benchmarks/robustness.py                                   # the full sweep (default engine)
    python benchmarks/robustness.py --cells noise,masked=yes --limit 5 --outdir /tmp/rob
    python benchmarks/robustness.py --engine-set inference.skip_solvent=false --outdir /tmp/rob_noskip
    python benchmarks/robustness.py --quick                           # smoke run: 1 structure, 2 cells
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from robustness_gen import NOISE_COLOURS, Setting, make_pair  # noqa: E402

log = logging.getLogger("robustness")
SHARED = ROOT.parent / "shared"
TYPICAL = Setting()
#: (factor, Setting fields, values): one factor changes at a time around TYPICAL.
FACTORS = (
    ("noise", ("noise",), [(c,) for c in NOISE_COLOURS]),
    ("bfactor", ("bfactor",), [(30.0,), (70.0,), (120.0,), (200.0,)]),
    ("voxel", ("voxel",), [(0.7,), (1.0,), (1.5,), (2.2,)]),
    ("scale", ("scale", "offset_sd"), [(1.0, 0.0), (0.001, 10.0), (250.0, -3.0)]),
    ("masked", ("masked",), [(False,), (True,)]),
)
QUICK_CELLS = "noise=white,noise=rise_k2"
#: Seeds of the pairs: SEED0 + 10 k for the k-th structure of the split (benchmark range, >= 10,000,000).
SEED0 = 30_000_000
VARIANTS = ("average", "sharpened", "enhanced")
SCORED = ("cc_mask", "cc_box", "fsc0.5_masked_A", "solvent_rms_ratio")


@dataclasses.dataclass(frozen=True)
class Cell:
    factor: str
    label: str
    setting: Setting

    @property
    def name(self) -> str:
        return f"{self.factor}={self.label}"


def _label(values: tuple) -> str:
    if isinstance(values[0], bool):
        return "yes" if values[0] else "no"
    if len(values) == 2:
        return f"x{values[0]:g}{values[1]:+g}sd"
    return f"{values[0]:g}" if isinstance(values[0], float) else str(values[0])


def all_cells() -> list[Cell]:
    """Every row of the report: each factor's values, the typical setting among them."""
    return [Cell(factor, _label(v), dataclasses.replace(TYPICAL, **dict(zip(fields, v))))
            for factor, fields, values in FACTORS for v in values]


def select_cells(spec: str | None) -> list[Cell]:
    """Cells named in ``spec`` (comma list of ``factor`` or ``factor=value``); all when None."""
    cells = all_cells()
    if not spec:
        return cells
    wanted = [w.strip() for w in spec.split(",") if w.strip()]
    found = [c for c in cells if c.name in wanted or c.factor in wanted]
    unknown = [w for w in wanted if not any(w in (c.name, c.factor) for c in cells)]
    if unknown:
        raise SystemExit(f"unknown cells {', '.join(unknown)}; known: {', '.join(c.name for c in cells)}")
    return found


def structures(split_dir: Path, limit: int, max_extent: float) -> list[tuple[int, Path]]:
    """The first ``limit`` structures of ``split_eval.txt`` whose atoms span at most ``max_extent`` A:
    ``(index in the split, path)``."""
    from deepemhancer_engine.atoms import Atoms, read_model

    found = []
    for k, name in enumerate((split_dir / "split_eval.txt").read_text().split()):
        if len(found) >= limit:
            break
        pos = Atoms.from_structure(read_model(split_dir / name)).pos
        if float((pos.max(0) - pos.min(0)).max()) <= max_extent:
            found.append((k, split_dir / name))
    return found


def engine_config(args) -> tuple[object, dict]:
    """The EnhanceConfig measured (the default, with ``--weights`` and ``--engine-set``) and its description."""
    from deepemhancer_engine.config import EnhanceConfig

    config = EnhanceConfig(weights=Path(args.weights) if args.weights else None)
    changes = {}
    for item in args.engine_set:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--engine-set {item!r}: write KEY=VALUE, e.g. inference.skip_solvent=false")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        config = _replace_path(config, key.split("."), value)
        changes[key] = value
    return config, changes


def _replace_path(obj, path: list[str], value):
    """``obj`` (nested frozen dataclasses) with the field at ``path`` set to ``value``."""
    if not dataclasses.is_dataclass(obj) or path[0] not in {f.name for f in dataclasses.fields(obj)}:
        raise SystemExit(f"--engine-set: {type(obj).__name__} has no field {path[0]!r}")
    inner = value if len(path) == 1 else _replace_path(getattr(obj, path[0]), path[1:], value)
    return dataclasses.replace(obj, **{path[0]: inner})


def fingerprint(config, loaded, changes: dict) -> dict:
    """What the cached results depend on besides the case: engine version and source (any change of the engine's
    code, tests aside, runs every case again), weights, configuration."""
    import hashlib

    import deepemhancer_engine
    from deepemhancer_engine.version import __version__

    package = Path(deepemhancer_engine.__file__).parent
    code = hashlib.sha256()
    for f in sorted(p for p in package.rglob("*.py") if "tests" not in p.parts):
        code.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    return {"engine": __version__, "code_sha256": code.hexdigest()[:16],
            "weights": str(getattr(loaded.card, "name", "?")), "sha256": str(getattr(loaded.card, "sha256", "?")),
            "set": changes, "config": repr(config)}


def run_case(path: Path, k: int, cell: Cell, config, loaded, workdir: Path) -> dict:
    """Make the pair, the average, the sharpened and the enhanced map, and score them: one JSON record."""
    from deepemhancer_engine import metrics as M
    from deepemhancer_engine.evaluate import model_metrics
    from deepemhancer_engine.io import read_map, write_map
    from deepemhancer_engine.pipeline import enhance_file

    t0 = time.perf_counter()
    pair = make_pair(path, cell.setting, SEED0 + 10 * k)
    vs = pair.grid.voxel_size
    files = [workdir / "half1.mrc", workdir / "half2.mrc"]
    for f, half in zip(files, (pair.half1, pair.half2)):
        write_map(f, half, pair.grid, overwrite=True)
    t1 = time.perf_counter()
    enhance_file(files, workdir / "enhanced.mrc", config=config, force=True, model=loaded, provenance=False)
    enhanced, _ = read_map(workdir / "enhanced.mrc")
    t_enh = time.perf_counter() - t1
    sharp = M.auto_sharpen(pair.half1, pair.half2, vs)
    average = 0.5 * (pair.half1 + pair.half2)
    d_half = sharp.resolution
    scores = model_metrics({"average": average, "sharpened": sharp.volume, "enhanced": enhanced}, pair.structure,
                           pair.grid, d_half, input_map=average)
    return {"structure": path.name.split("__")[0], "cell": cell.name, "setting": cell.setting.key(),
            "seed": SEED0 + 10 * k, "shape": list(pair.grid.shape), "target_resolution_A": cell.setting.resolution,
            "half_fsc0.143_A": d_half, "half_fsc_at_10A": float(np.interp(0.1, sharp.fsc.freq, sharp.fsc.fsc)),
            "noise_to_signal_std": pair.noise_std / float(pair.signal.std()), "bfactor_fit_A2": sharp.bfactor,
            "scores": {v: {m: scores[v][m] for m in SCORED} for v in VARIANTS},
            "seconds": {"enhance": t_enh, "total": time.perf_counter() - t0}}


def load_cache(path: Path, finger: dict) -> dict[tuple[str, str], dict]:
    """Records of ``path`` made with the same engine (:func:`fingerprint`), by (structure, setting key)."""
    found = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("fingerprint") == finger:
                found[(rec["structure"], rec["setting"])] = rec
    return found


def sweep(cells: list[Cell], cases: list[tuple[int, Path]], config, loaded, finger: dict, jsonl: Path) -> list[dict]:
    """Run every (cell, structure) not in the cache; a setting shared by two cells (the typical one) runs once."""
    cache = load_cache(jsonl, finger)
    out, todo = [], len(cells) * len(cases)
    with tempfile.TemporaryDirectory(prefix="robustness_") as tmp:
        for i, (cell, (k, path)) in enumerate(((c, s) for c in cells for s in cases), 1):
            name = path.name.split("__")[0]
            rec = cache.get((name, cell.setting.key()))
            if rec is None:
                rec = {**run_case(path, k, cell, config, loaded, Path(tmp)), "fingerprint": finger}
                cache[(name, cell.setting.key())] = rec
                with jsonl.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                how = f"{rec['seconds']['total']:.0f} s"
            else:
                how = "cached"
            s = rec["scores"]
            log.info("[%d/%d] %s %s: d %.2f A, CC_mask sharp %.3f enh %.3f, CC_box sharp %.3f enh %.3f (%s)", i, todo,
                     cell.name, name, rec["half_fsc0.143_A"], s["sharpened"]["cc_mask"], s["enhanced"]["cc_mask"],
                     s["sharpened"]["cc_box"], s["enhanced"]["cc_box"], how)
            out.append({**rec, "cell": cell.name})
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=10, help="held-out structures per cell (default 10)")
    ap.add_argument("--cells", default=None, help="comma list of factors or factor=value cells (default: all)")
    ap.add_argument("--outdir", default=None, help="default benchmarks/results (--quick: a temporary folder)")
    ap.add_argument("--weights", default=None, help="weights .pt (card beside it); default: the shipped default")
    ap.add_argument("--engine-set", action="append", default=[], metavar="KEY=VALUE",
                    help="change the EnhanceConfig measured, e.g. inference.skip_solvent=false (JSON values)")
    ap.add_argument("--max-extent", type=float, default=46.0,
                    help="largest span of a structure's atoms (A; default 46: boxes of at most 70 A)")
    ap.add_argument("--structures", default=str(SHARED / "structures"), help="folder with split_eval.txt")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: 1 structure, cells {QUICK_CELLS}")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the JSON lines")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    engine_log = logging.getLogger("deepemhancer_engine")
    level = engine_log.level
    engine_log.setLevel(logging.ERROR)  # one line per case, not one per pipeline stage
    try:
        run(args)
    finally:
        engine_log.setLevel(level)
    return 0


def run(args) -> Path:
    """The sweep (or only the report) as ``args`` say; returns the report's path."""
    from robustness_report import write_report

    from deepemhancer_engine.pipeline import load

    if args.quick:
        args.limit, args.cells = 1, args.cells or QUICK_CELLS
    default_out = Path(tempfile.gettempdir()) / "robustness_quick" if args.quick else ROOT / "benchmarks" / "results"
    outdir = Path(args.outdir) if args.outdir else default_out
    outdir.mkdir(parents=True, exist_ok=True)
    cells = select_cells(args.cells)
    config, changes = engine_config(args)
    loaded = load(config)
    finger = fingerprint(config, loaded, changes)
    jsonl = outdir / "robustness.jsonl"
    t0 = time.perf_counter()
    if args.report_only:
        cache = load_cache(jsonl, finger)
        records = [{**r, "cell": c.name} for c in cells for r in cache.values() if r["setting"] == c.setting.key()]
    else:
        cases = structures(Path(args.structures), args.limit, args.max_extent)
        log.info("%d cells x %d structures (%s)", len(cells), len(cases), ", ".join(p.name for _, p in cases))
        records = sweep(cells, cases, config, loaded, finger, jsonl)
    path = write_report(outdir, cells, records, finger, time.perf_counter() - t0, TYPICAL)
    log.info("wrote %s", path)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
