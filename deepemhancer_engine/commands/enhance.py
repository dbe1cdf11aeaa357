"""``deepemhancer [enhance]``: enhance one map, a pair of half maps, or a list of jobs (the model loads once).

The options keep the original DeepEMhancer's flags (``-i/-i2/-o/-p/-m/-b/-g/-s ...``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import _args
from ._run import one_line

log = logging.getLogger("deepemhancer_engine")


def add_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``deepemhancer`` / ``deepemhancer enhance``."""
    from ..config import DEFAULT_STRIDE
    from ..version import __version__

    main = parser.add_argument_group("Main")
    main.add_argument("-i", "--inputMap", dest="input", metavar="MAP",
                      help="input map, or half map 1 when -i2 is given (.mrc, .map, .mrc.gz)")
    main.add_argument("-i2", "--halfMap2", dest="half2", metavar="HALF2",
                      help="half map 2; the two halves are averaged")
    main.add_argument("-o", "--outputMap", dest="output", metavar="OUT",
                      help="output map (MRC); keeps the input's shape, voxel size and origin")
    main.add_argument("--confidence", metavar="CONF",
                      help="also write a confidence map (0..1, the output's grid): how well the two half maps, "
                           "enhanced independently, reproduce the enhanced density; needs -i2 (about 3x the time)")
    main.add_argument("--inputList", dest="input_list", metavar="LIST",
                      help="several jobs, one per line: 'MAP OUT' or 'HALF1 HALF2 OUT' (the model loads once)")
    _args.add_model_arg(main)
    norm = parser.add_argument_group("Normalisation (default: automatic noise estimation)")
    excl = norm.add_mutually_exclusive_group()
    excl.add_argument("-m", "--binaryMask", dest="mask", metavar="MASK",
                      help="mask (values 0..1) around the molecule; uses the mask-normalised model")
    excl.add_argument("--noiseStats", nargs=2, type=float, metavar=("MEAN", "STD"),
                      help="mean and standard deviation of the solvent noise of the input")
    extra = parser.add_argument_group("Additional")
    extra.add_argument("--cleaningStrength", "--cleaningStrengh", dest="cleaning", type=float, default=None,
                       help="remove small disconnected blobs (0..1; off by default)")
    _args.add_device_args(extra)
    extra.add_argument("-s", "--samplingRate", dest="sampling", type=float, default=None,
                       help="voxel size in A, overriding the header's")
    extra.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    extra.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads of the network and the linear algebra (torch, OpenMP, BLAS; default: "
                            "the CPUs this process may use)")
    adv = parser.add_argument_group("Advanced")
    adv.add_argument("--stride", type=int, default=DEFAULT_STRIDE,
                     help=f"voxels between cube starts (default {DEFAULT_STRIDE}; the original used 16)")
    adv.add_argument("--blend", choices=("gaussian", "constant"), default="gaussian",
                     help="gaussian (default) or constant (uniform averaging, like the original)")
    adv.add_argument("--lattice", choices=("fcc", "cubic"), default=None,
                     help="which cubes of the grid run: fcc = half of them in a 3-D checkerboard (default with "
                          "gaussian blending and a stride of at most half the cube), cubic = all (the original; "
                          "default otherwise)")
    adv.add_argument("--resolution", type=float, default=None, metavar="A",
                     help="keep the network's output up to this resolution (A), the input's data beyond it damped "
                          "(default: the half-map FSC-0.143 with -i2; no limit for a single map)")
    adv.add_argument("--no-resolution-limit", dest="limit_resolution", action="store_false",
                     help="keep everything the network returns, also beyond the resolution of the data")
    adv.add_argument("--condition", choices=("lowpass", "fscweight", "none"), default="lowpass",
                     help="what the network sees beyond the resolution (--resolution or the half-map FSC-0.143): "
                          "lowpass (default): the map low-passed there before the noise is measured; fscweight: "
                          "weighted by the half-map FSC first; none: the data as they are")
    adv.add_argument("--no-solvent-envelope", dest="solvent_envelope", action="store_false",
                     help="beyond the resolution limit, put the data back over the whole box (default: only "
                          "inside the molecule's envelope, so the solvent keeps no speckle)")
    adv.add_argument("--no-match-amplitudes", dest="match_amplitudes", action="store_false",
                     help="keep the network's own shell amplitudes (default with a resolution limit: those of the "
                          "classical map, the average sharpened by its Guinier B and low-passed at the limit, "
                          "FSC-weighted with half maps, measured inside the molecule's envelope)")
    adv.add_argument("--no-null-correction", dest="null_correction", action="store_false",
                     help="keep the network's response to pure noise (a faint fixed pattern tied to the cube "
                          "grid) instead of subtracting it")
    adv.add_argument("--no-skip", dest="skip_solvent", action="store_false",
                     help="run every cube (default: cubes with no molecule within 8 A, or outside the mask, are "
                          "not run and give 0; the original ran every cube)")
    _args.add_weights_arg(adv)
    out = parser.add_argument_group("Output")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    out.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    out.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    out.add_argument("--version", action="version", version=f"deepemhancer {__version__}")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Either ``--inputList`` or ``-i`` and ``-o`` (argparse's usage error, exit 2)."""
    if args.input_list:
        if args.input or args.half2 or args.output or args.confidence:
            parser.error("--inputList cannot be combined with -i/-i2/-o/--confidence")
    elif not (args.input and args.output):
        parser.error("the following arguments are required: -i/--inputMap, -o/--outputMap")


def config_from_args(args: argparse.Namespace):
    """Turn parsed options into an :class:`EnhanceConfig` (validation happens there)."""
    from pathlib import Path

    from ..config import EnhanceConfig, NormalizationConfig, TilingConfig

    if args.mask:
        norm = NormalizationConfig(mode="mask", mask=Path(args.mask))
    elif args.noiseStats:
        norm = NormalizationConfig(mode="stats", noise_mean=args.noiseStats[0], noise_std=args.noiseStats[1])
    else:
        norm = NormalizationConfig()
    return EnhanceConfig(
        model=args.model,
        weights=_args.weights_path(args),
        normalization=norm,
        tiling=TilingConfig(stride=args.stride, blend=args.blend, lattice=args.lattice),
        inference=_args.inference_config(args, null_correction=getattr(args, "null_correction", True),
                                         skip_solvent=getattr(args, "skip_solvent", True)),
        cleaning_strength=args.cleaning,
        resolution=getattr(args, "resolution", None),
        limit_resolution=getattr(args, "limit_resolution", True),
        condition=getattr(args, "condition", "lowpass"),
        solvent_envelope=getattr(args, "solvent_envelope", True),
        match_amplitudes=getattr(args, "match_amplitudes", True),
    )


def read_job_list(path: str) -> list[tuple[list[str], str]]:
    """Parse an ``--inputList`` file: one job per line, ``MAP OUT`` or ``HALF1 HALF2 OUT``; ``#`` comments."""
    from ..errors import InputError

    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the job list ({exc})") from None
    jobs = []
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) not in (2, 3):
            raise InputError(f"{path}:{number}: expected 'MAP OUT' or 'HALF1 HALF2 OUT', got {line.strip()!r}")
        jobs.append((words[:-1], words[-1]))
    if not jobs:
        raise InputError(f"{path}: the job list is empty")
    return jobs


def main(args: argparse.Namespace) -> int:
    """Run every job; with several, a failed job is reported on one line and the others still run (exit code:
    the worst failure's)."""
    from .. import provenance
    from ..errors import DeepEMhancerError, InputError

    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    provenance.set_threads(args.threads)  # before the pipeline loads numpy's BLAS and torch
    from ..pipeline import enhance_file

    config = config_from_args(args)
    if args.sampling is not None:
        log.warning("-s/--samplingRate %.4g overrides the voxel size in the header", args.sampling)
    jobs = read_job_list(args.input_list) if args.input_list else [
        ([args.input] + ([args.half2] if args.half2 else []), args.output)]
    model = _model_once(config)
    failed = code = 0
    for number, (inputs, output) in enumerate(jobs, 1):
        t0 = time.perf_counter()
        if len(jobs) > 1:
            log.info("Job %d/%d: %s -> %s", number, len(jobs), " + ".join(inputs), output)
        try:
            out = enhance_file(inputs, output, config=config, force=args.force, model=model,
                               progress=ProgressReporter(), voxel_size=args.sampling,
                               confidence=getattr(args, "confidence", None),
                               provenance={"command": getattr(args, "command_line", None)})
        except DeepEMhancerError as exc:
            if len(jobs) == 1:
                raise
            print(f"error: {one_line(exc)}", file=sys.stderr)
            failed, code = failed + 1, max(code, exc.exit_code)
            continue
        log.info("Done in %.1f s: %s", time.perf_counter() - t0, out)
    if len(jobs) > 1:
        log.info("%d of %d jobs succeeded", len(jobs) - failed, len(jobs))
    return code


def _model_once(config):
    """A function returning the loaded model, loading it on the first call: ``enhance_file`` calls it after
    the first job's inputs have been checked, so bad input fails before the weights load."""
    from ..pipeline import load

    cache: list = []

    def model():
        if not cache:
            cache.append(load(config))
        return cache[0]

    return model


class ProgressReporter:
    """A live line on a terminal; otherwise a log line every 10 % or 30 s."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.last_log = 0.0
        self.last_frac = -1.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter() - self.start
        frac = done / max(total, 1)
        eta = now / frac - now if frac > 0 else float("nan")
        msg = f"cubes {done}/{total} ({100 * frac:.0f}%), {now:.0f} s elapsed, ~{eta:.0f} s left"
        if self.tty and log.isEnabledFor(logging.INFO):
            self.stream.write("\r" + msg + ("\n" if done >= total else ""))
            self.stream.flush()
        elif done >= total or frac - self.last_frac >= 0.1 or now - self.last_log >= 30:
            log.info(msg)
            self.last_log, self.last_frac = now, frac
