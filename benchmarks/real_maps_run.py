"""Every map of ``../shared/real_maps`` through the CLI with defaults (one map, the whole file), as a user runs it.

Per map: the exit code, the wall time, the output/input intensity inside the input's non-solvent region
(``normalize.solvent_voxels``; with under 2 % solvent, the voxels above the median) and the solvent/molecule
rms of input and output, plus whether the masked-solvent rule applied. It checks that every map runs and keeps
its intensity scale; the map-model figures are ``benchmarks/quality.py``'s.

    python benchmarks/real_maps_run.py --outdir /tmp/real_runs > benchmarks/results/real_maps_run.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepemhancer_engine.io import read_map  # noqa: E402
from deepemhancer_engine.metrics import intensity_ratio, solvent_ratio  # noqa: E402
from deepemhancer_engine.normalize import solvent_voxels  # noqa: E402


def regions(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(molecule, solvent) of a map without a model: the non-solvent voxels, or above the median."""
    solvent = solvent_voxels(volume)
    if solvent.mean() < 0.02:
        molecule = volume > np.median(volume)
        return molecule, ~molecule
    return ~solvent, solvent


def run_one(path: Path, outdir: Path) -> str:
    out = outdir / f"{path.name.split('.')[0]}_enhanced.mrc"
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "deepemhancer_engine", "-i", str(path), "-o", str(out), "--force"],
                         capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if res.returncode:
        last = (res.stderr or res.stdout).strip().splitlines()[-1:]
        return f"| {path.name} | {res.returncode} | {wall:.0f} | - | - | - | {' '.join(last)} |"
    volume, _ = read_map(path)
    enhanced, _ = read_map(out)
    molecule, solvent = regions(volume)
    masked = "masked or flattened" in res.stdout + res.stderr
    return (f"| {path.name} | 0 | {wall:.0f} | {intensity_ratio(enhanced, volume, molecule, solvent):.3g} | "
            f"{solvent_ratio(volume, molecule, solvent):.3f} | {solvent_ratio(enhanced, molecule, solvent):.3f} | "
            f"{'masked solvent' if masked else ''} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real-maps", default=str(ROOT.parent / "shared" / "real_maps"))
    ap.add_argument("--outdir", required=True, help="where the enhanced maps go")
    args = ap.parse_args()
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    maps = sorted(p for p in Path(args.real_maps).glob("*/*") if p.name.lower().endswith((".mrc", ".map", ".mrc.gz"))
                  and "mask" not in p.name.lower())
    print("| map | exit | wall (s) | intensity out/in | solvent/molecule in | out | note |")
    print("|---|---|---|---|---|---|---|")
    for path in maps:
        print(run_one(path, outdir), flush=True)


if __name__ == "__main__":
    main()
