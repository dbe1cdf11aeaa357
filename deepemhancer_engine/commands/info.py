"""``deepemhancer info``: the model cards of the registered models and the network sizes."""

from __future__ import annotations

import argparse

from ..config import NOISE_TARGET_STD, ModelName
from ..errors import WeightsError


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None, metavar="PATH.pt", help="describe these weights instead")


def main(args: argparse.Namespace) -> int:
    from ..model import build_model, count_parameters
    from ..nullresponse import cache_dir, load_null_responses, null_path
    from ..weights import describe, resolve_weights, weights_dir

    print(f"Weights directory: {weights_dir()}")
    targets = [(ModelName.TIGHT, args.weights)] if args.weights else [(m, None) for m in ModelName]
    for name, path in targets:
        print()
        try:
            pt, card = resolve_weights(name, path)
        except WeightsError as exc:
            print(f"{name}: unavailable ({exc})")
            continue
        print(describe(card))
        shipped = sorted(load_null_responses(pt, card.sha256, NOISE_TARGET_STD))
        print("null response: " + (", ".join(f"{p} {t}^3" for t, p in shipped) + f" ({null_path(pt).name})"
                                   if shipped else "measured at run time (no valid .null.npz beside the weights)"))
    cache = cache_dir()
    print()
    print(f"Null-response cache (band-limited noise): {cache if cache else 'off'}")
    print()
    print("Architectures:")
    variants = (("paper U-Net (32/64/128)", (32, 64, 128)), ("compact U-Net (16/32/64)", (16, 32, 64)))
    for label, filters in variants:
        n = count_parameters(build_model("unet3d", {"filters": list(filters)}))
        print(f"  {label}: {n:,} parameters")
    return 0
