"""``deepemhancer train``: fit (or fine-tune) a network on shards made by ``deepemhancer simulate`` and
write weights + model card (training only; ``pip install 'deepemhancer-engine[train]'``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import add_device_choice, deadline


def add_args(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--noise-cubes", choices=("blur", "spectra"), default="blur",
                        help="pure-noise cubes: blurred white noise (the shipped weights') or noise whose "
                             "spectrum falls, is flat or rises, sometimes low-passed as inference conditions it")
    parser.add_argument("--band-limit", action="store_true",
                        help="low-pass each target cube at its resolution after masking")
    parser.add_argument("--hours", type=float, default=None, help="time budget of this call")
    parser.add_argument("--until", default=None, help="stop at this UTC time (HH:MM)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--init", default=None, help="start from these weights (.pt, fine-tuning)")
    parser.add_argument("--export", default=None, help="write the best weights + card here (.pt) at the end")
    parser.add_argument("--export-every", type=float, default=20.0, help="also export every N minutes")
    add_device_choice(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0,
                        help="processes making batches (0: in the training process; use several on a GPU)")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16); ignored elsewhere")
    parser.add_argument("--half-weights", action="store_true", help="export the weights in float16 (half size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--notes", default="", help="extra text for the model card")


def main(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..training.trainer import TrainConfig, train

    try:
        filters = tuple(int(v) for v in args.filters.split(","))
    except ValueError:
        raise InputError(f"--filters must be integers separated by commas (e.g. 16,32,64), "
                         f"got {args.filters!r}") from None
    cfg = TrainConfig(
        data=Path(args.data), run_dir=Path(args.run_dir), name=args.name, target=args.target,
        normalization=args.normalization, max_resolution=args.max_resolution,
        filters=filters, crop=args.crop,
        small_crop=args.small_crop, p_small=args.p_small, batch=args.batch,
        lr=args.lr, patience=args.patience, epoch_steps=args.epoch_steps, val_cubes=args.val_cubes,
        noise_fraction=args.noise_fraction, noise_cubes=args.noise_cubes, band_limit=args.band_limit, hours=args.hours,
        deadline=deadline(args.until),
        max_steps=args.max_steps, init=Path(args.init) if args.init else None,
        export=Path(args.export) if args.export else None, export_every_min=args.export_every,
        device=args.device, threads=args.threads, workers=args.workers, amp=args.amp,
        half_weights=args.half_weights, seed=args.seed, notes=args.notes,
    )
    train(cfg)
    return 0
