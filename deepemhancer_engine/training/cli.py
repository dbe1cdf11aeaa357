"""``deepemhancer simulate`` and ``deepemhancer train`` (training only; ``pip install .[train]``).

``simulate`` pre-generates training shards from the train split of the structure corpus;
``train`` fits (or fine-tunes) a network on them and writes weights + model card.
Each subcommand module exposes ``add_args(parser)`` and ``run(args) -> int``; the main CLI
dispatches on the first word (``deepemhancer simulate ...``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_STRUCTURES = "../shared/structures/split_train.txt"


def _deadline(text: str | None) -> float | None:
    """``HH:MM`` (UTC, today) or an ISO time -> epoch seconds."""
    if not text:
        return None
    import datetime as dt

    if len(text) <= 5 and ":" in text:
        now = dt.datetime.now(dt.timezone.utc)
        h, m = (int(v) for v in text.split(":"))
        return now.replace(hour=h, minute=m, second=0, microsecond=0).timestamp()
    return dt.datetime.fromisoformat(text).timestamp()


# ----------------------------------------------------------------------------------------- simulate
def add_simulate_args(parser: argparse.ArgumentParser) -> None:
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


def run_simulate(args: argparse.Namespace) -> int:
    from .dataset import generate, plan_jobs, structure_list

    if "split_eval" in str(args.structures):
        log.error("refusing to simulate training data from the held-out eval split %s", args.structures)
        return 2
    structures = structure_list(args.structures, args.root)[: args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.crop < 16 or args.crop % 8:
        log.error("--crop must be a multiple of 8 of at least 16, got %d", args.crop)
        return 2
    jobs = plan_jobs(structures, out, args.pairs_per_structure, args.seed, crop=args.crop)
    log.info("%d structures, %d pairs -> %s", len(structures), len(jobs), out)
    t0 = time.time()
    counts = generate(jobs, workers=args.workers, deadline=_deadline(args.until))
    log.info("done in %.0f s: %s", time.time() - t0, counts)
    return 0


# -------------------------------------------------------------------------------------------- train
def add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="folder of shards made by 'deepemhancer simulate'")
    parser.add_argument("--run-dir", required=True, help="checkpoints, log and loss curve (resumes if present)")
    parser.add_argument("--name", default="tightTarget", help="model name written into the card")
    parser.add_argument("--target", default="tightTarget", choices=["tightTarget", "wideTarget"])
    parser.add_argument("--normalization", default="noise", choices=["noise", "mask"])
    parser.add_argument("--max-resolution", type=float, default=None,
                        help="train only on pairs with half-map FSC-0.143 better than this (highRes: 4)")
    parser.add_argument("--filters", default="16,32,64", help="U-Net filters (paper: 32,64,128)")
    parser.add_argument("--crop", type=int, default=48,
                        help="large training cube edge (multiple of 8; the card's tile)")
    parser.add_argument("--small-crop", type=int, default=32, help="small training cube edge")
    parser.add_argument("--p-small", type=float, default=0.65, help="share of batches made of small cubes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=5, help="epochs without improvement before lr/2")
    parser.add_argument("--epoch-steps", type=int, default=50, help="steps per (validation) epoch")
    parser.add_argument("--val-cubes", type=int, default=32)
    parser.add_argument("--noise-fraction", type=float, default=0.1,
                        help="share of pure-noise cubes (target 0) per batch")
    parser.add_argument("--band-limit", action="store_true",
                        help="low-pass each target cube at its resolution after masking")
    parser.add_argument("--hours", type=float, default=None, help="time budget of this call")
    parser.add_argument("--until", default=None, help="stop at this UTC time (HH:MM)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--init", default=None, help="start from these weights (.pt, fine-tuning)")
    parser.add_argument("--export", default=None, help="write the best weights + card here (.pt) at the end")
    parser.add_argument("--export-every", type=float, default=20.0, help="also export every N minutes")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0,
                        help="processes making batches (0: in the training process; use several on a GPU)")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16); ignored elsewhere")
    parser.add_argument("--half-weights", action="store_true", help="export the weights in float16 (half size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--notes", default="", help="extra text for the model card")


def run_train(args: argparse.Namespace) -> int:
    from .trainer import TrainConfig, train

    cfg = TrainConfig(
        data=Path(args.data), run_dir=Path(args.run_dir), name=args.name, target=args.target,
        normalization=args.normalization, max_resolution=args.max_resolution,
        filters=tuple(int(v) for v in args.filters.split(",")), crop=args.crop,
        small_crop=args.small_crop, p_small=args.p_small, batch=args.batch,
        lr=args.lr, patience=args.patience, epoch_steps=args.epoch_steps, val_cubes=args.val_cubes,
        noise_fraction=args.noise_fraction, band_limit=args.band_limit, hours=args.hours,
        deadline=_deadline(args.until),
        max_steps=args.max_steps, init=Path(args.init) if args.init else None,
        export=Path(args.export) if args.export else None, export_every_min=args.export_every,
        device=args.device, threads=args.threads, workers=args.workers, amp=args.amp,
        half_weights=args.half_weights, seed=args.seed, notes=args.notes,
    )
    train(cfg)
    return 0


# ------------------------------------------------------------------------------- dispatch helpers
def add_args(parser: argparse.ArgumentParser, command: str = "train") -> None:
    """Add the arguments of ``command`` (``train`` or ``simulate``) to ``parser``."""
    (add_simulate_args if command == "simulate" else add_train_args)(parser)
    parser.set_defaults(training_command=command)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand the parser was built for (see :func:`add_args`)."""
    if getattr(args, "training_command", "train") == "simulate":
        return run_simulate(args)
    return run_train(args)


def main(argv=None) -> int:
    """``python -m deepemhancer_engine.training.cli {simulate,train} ...``"""
    parser = argparse.ArgumentParser(prog="deepemhancer-training", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_args(sub.add_parser("simulate", help="pre-generate training shards"), "simulate")
    add_args(sub.add_parser("train", help="train or fine-tune a network"), "train")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
