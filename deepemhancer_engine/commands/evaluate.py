"""``deepemhancer evaluate``: the command line of :mod:`deepemhancer_engine.evaluate` (map-model metrics,
classical baselines and model-free honesty checks, written into ``--outdir``)."""

from __future__ import annotations

import argparse
import logging

from . import _args

log = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``deepemhancer evaluate``; the network and device options are those of ``enhance``."""
    from ..evaluate import NOISE_SEED

    inp = parser.add_argument_group("Input")
    inp.add_argument("--half1", metavar="MAP", help="half map 1 (with --half2)")
    inp.add_argument("--half2", metavar="MAP", help="half map 2")
    inp.add_argument("--map", metavar="MAP", help="a single map instead of half maps (used as both halves)")
    inp.add_argument("--enhanced", metavar="MAP", help="enhanced map; without it the network is run here")
    inp.add_argument("--model", dest="atomic_model", metavar="PDB/CIF",
                     help="atomic model in the map's frame (map-model metrics and the LocScale variant)")
    inp.add_argument("--confidence", metavar="MAP",
                     help="confidence map of the enhanced map (deepemhancer --confidence); with --model: how well "
                          "it ranks blocks of the molecule by their agreement with the model")
    inp.add_argument("--resolution", type=float, metavar="A",
                     help="resolution to use instead of the half-map FSC-0.143 (needed with --map)")
    out = parser.add_argument_group("Output")
    out.add_argument("--outdir", required=True, metavar="DIR", help="folder for metrics.tsv and the PNGs")
    out.add_argument("--label", default="", help="title for the figures")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    out.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    net = parser.add_argument_group("Network (enhancement and model-free checks)")
    _args.add_model_arg(net)
    _args.add_weights_arg(net)
    _args.add_device_args(net)
    net.add_argument("--noise-test", action="store_true", help="enhance two pure-noise volumes and compare")
    net.add_argument("--seed", type=int, default=NOISE_SEED, help=f"noise-test seed (default {NOISE_SEED})")
    net.add_argument("--no-network", action="store_true",
                     help="with --enhanced: do not load the network; skip the model-free checks")


def read_inputs(args: argparse.Namespace):
    """``(half1, half2, grid)`` of ``--half1/--half2``, or ``--map`` used as both halves."""
    from ..errors import InputError
    from ..pipeline import read_half_maps

    if args.map and (args.half1 or args.half2):
        raise InputError("give either --map or --half1/--half2, not both")
    if args.map:
        vol, _, grid = read_half_maps([args.map])
        return vol, vol, grid
    if not (args.half1 and args.half2):
        raise InputError("give --half1 and --half2, or --map")
    h1, h2, grid = read_half_maps([args.half1, args.half2], distinct=False)
    return h1, h2, grid


def read_enhanced(path: str, grid, what: str = "enhanced map"):
    """The ``--enhanced`` (or ``--confidence``) map, which must have the input's shape (a different voxel size
    only warns)."""
    import numpy as np

    from ..errors import InputError
    from ..io import read_map

    enhanced, egrid = read_map(path, what=what)
    if tuple(egrid.shape) != tuple(grid.shape):
        raise InputError(f"{path}: {what} shape {egrid.shape} differs from input {grid.shape}")
    if not np.allclose(egrid.voxel_size, grid.voxel_size, rtol=1e-4):
        log.warning("%s: voxel size %s differs from the input's %s", path, egrid.voxel_size, grid.voxel_size)
    return enhanced


def main(args: argparse.Namespace) -> int:
    """Run ``deepemhancer evaluate``; returns the exit code."""
    from ..config import EnhanceConfig
    from ..errors import InputError
    from ..evaluate import evaluate, format_summary, make_enhancer

    h1, h2, grid = read_inputs(args)
    enhanced = read_enhanced(args.enhanced, grid) if args.enhanced else None
    confidence = read_enhanced(args.confidence, grid, what="confidence map") if args.confidence else None
    if args.no_network and enhanced is None:
        raise InputError("--no-network needs --enhanced")
    enhancer = None
    if not args.no_network:
        config = EnhanceConfig(model=args.model, weights=_args.weights_path(args),
                               inference=_args.inference_config(args))
        enhancer = make_enhancer(config, grid.voxel_size)
    result = evaluate(h1, h2, grid, enhanced=enhanced, enhancer=enhancer, model=args.atomic_model,
                      outdir=args.outdir, noise_test=args.noise_test, resolution=args.resolution, seed=args.seed,
                      label=args.label, plots=not args.no_plots, confidence=confidence)
    log.info("\n%s", format_summary(result))
    return 0
