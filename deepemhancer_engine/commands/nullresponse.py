"""``deepemhancer null-response``: measure the white-noise null response of weights files on CPU and write
``NAME.null.npz`` beside each (see :mod:`deepemhancer_engine.nullresponse`)::

    deepemhancer null-response deepemhancer_engine/weights/tightTarget.pt --cubes 128
"""

from __future__ import annotations

import argparse


def add_args(parser: argparse.ArgumentParser) -> None:
    from ..nullresponse import SHIPPED_CUBES

    parser.add_argument("weights", nargs="+", metavar="NAME.pt",
                        help="weights files (model card NAME.json beside each)")
    parser.add_argument("--cubes", type=int, default=SHIPPED_CUBES,
                        help=f"noise cubes averaged (default {SHIPPED_CUBES})")


def main(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..nullresponse import measure

    if args.cubes < 1:
        raise InputError(f"--cubes must be at least 1, got {args.cubes}")
    for pt in args.weights:
        print(measure(pt, cubes=args.cubes))
    return 0
