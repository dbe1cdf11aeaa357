"""``deepemhancer simulate``: pre-generate training shards from the train split of the structure corpus
(training only; ``pip install 'deepemhancer-engine[train]'``)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ._args import deadline

log = logging.getLogger(__name__)

DEFAULT_STRUCTURES = "../shared/structures/split_train.txt"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the shards (outside the repository)")
    parser.add_argument("--structures", default=DEFAULT_STRUCTURES,
                        help="list of model files, one per line (default: the train split). Never the eval split.")
    parser.add_argument("--root", default=None, help="folder the list's paths are relative to (default: its folder)")
    parser.add_argument("--pairs-per-structure", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="seed base (the benchmark uses seeds >= 10,000,000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--until", default=None, help="stop at this UTC time (HH:MM)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many structures")
    parser.add_argument("--crop", type=int, default=48,
                        help="edge of the stored cubes (voxels at 1 A; the paper trains on 64); structures whose "
                             "box is smaller are skipped")
    parser.add_argument("--variety", default="sim1", metavar="{sim1,sim2}",
                        help="data version: sim1 (default) is what the shipped weights were trained on, unconditioned "
                             "inputs; sim2 adds, per pair, falling / flat / rising noise with or without a roll-off "
                             "near Nyquist, voxel sizes of 0.5-2.5 A, anisotropic blur (30%%), depositor-masked "
                             "halves (25%%) and an arbitrary scale and offset, and prepares the inputs as 'enhance' "
                             "does (conditioned at the half maps' FSC-0.143). One version per --out folder")


def main(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..training.dataset import generate, plan_jobs, shard_variety, structure_list
    from ..training.variety import parse_variety

    if "split_eval" in str(args.structures):
        raise InputError(f"{args.structures}: refusing to simulate training data from the held-out eval split")
    if args.crop < 16 or args.crop % 8:
        raise InputError(f"--crop must be a multiple of 8 of at least 16, got {args.crop}")
    variety = parse_variety(args.variety)
    until = deadline(args.until)
    structures = structure_list(args.structures, args.root)[: args.limit]
    out = Path(args.out)
    there = shard_variety(out) if out.is_dir() else None
    if there is not None and there != variety.value:
        raise InputError(f"{out} holds {there} shards; write the {variety} data to another --out folder")
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(structures, out, args.pairs_per_structure, args.seed, crop=args.crop, variety=variety)
    log.info("%d structures, %d pairs -> %s", len(structures), len(jobs), out)
    t0 = time.time()
    counts = generate(jobs, workers=args.workers, deadline=until)
    log.info("done in %.0f s: %s", time.time() - t0, counts)
    return 0
