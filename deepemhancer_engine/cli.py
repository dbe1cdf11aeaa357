"""deepemhancer: enhance cryo-EM maps with a 3D U-Net (DeepEMhancer, in PyTorch).

Typical use::

    deepemhancer -i half1.mrc -i2 half2.mrc -o enhanced.mrc
    deepemhancer -i map.mrc -o enhanced.mrc -p wideTarget
    deepemhancer -i half1.mrc -i2 half2.mrc -o enhanced.mrc -m mask.mrc

Other commands: ``deepemhancer info`` (model cards), ``deepemhancer evaluate`` (metrics and
honesty checks), ``deepemhancer simulate`` / ``deepemhancer train`` (training data and trainer).

Exit codes: 0 success, 2 bad input, 3 weights problem, 4 device or memory problem, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time
import warnings
from collections.abc import Sequence

from .version import __version__

log = logging.getLogger("deepemhancer_engine")

#: Subcommands: first word -> module providing ``add_args(parser)`` and ``run(args) -> int``.
SUBCOMMANDS = {
    "info": ("deepemhancer_engine.info", "print the model cards of the shipped models"),
    "evaluate": ("deepemhancer_engine.evaluate", "compare with a model and baselines; honesty checks"),
    "simulate": ("deepemhancer_engine.training.cli", "simulate training pairs from atomic models"),
    "train": ("deepemhancer_engine.training.cli", "train a model on simulated pairs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepemhancer",
        description=__doc__.split("\n\n")[0],
        epilog="Commands:\n" + "\n".join(f"  deepemhancer {k:9s} {v[1]}" for k, v in SUBCOMMANDS.items())
        + "\n\nEnvironment:"
        "\n  DEEPEMHANCER_WEIGHTS_DIR  folder of NAME.pt + NAME.json to use instead of the shipped weights"
        "\n  DEEPEMHANCER_CACHE        cache of the network's noise response for voxels coarser than 1 A"
        "\n                            (default ~/.cache/deepemhancer; 'off': no cache)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    main = parser.add_argument_group("Main")
    main.add_argument("-i", "--inputMap", dest="input", metavar="MAP",
                      help="input map, or half map 1 when -i2 is given (.mrc, .map, .mrc.gz)")
    main.add_argument("-i2", "--halfMap2", dest="half2", metavar="HALF2",
                      help="half map 2; the two halves are averaged")
    main.add_argument("-o", "--outputMap", dest="output", metavar="OUT",
                      help="output map (MRC); keeps the input's shape, voxel size and origin")
    main.add_argument("--inputList", dest="input_list", metavar="LIST",
                      help="several jobs, one per line: 'MAP OUT' or 'HALF1 HALF2 OUT' (the model loads once)")
    main.add_argument("-p", "--processingType", dest="model", default="tightTarget",
                      metavar="{tightTarget,wideTarget,highRes}",
                      help="model: tightTarget (default), wideTarget (wider mask), highRes (maps < 4 A)")
    norm = parser.add_argument_group("Normalisation (default: automatic noise estimation)")
    excl = norm.add_mutually_exclusive_group()
    excl.add_argument("-m", "--binaryMask", dest="mask", metavar="MASK",
                      help="mask (values 0..1) around the molecule; uses the mask-normalised model")
    excl.add_argument("--noiseStats", nargs=2, type=float, metavar=("MEAN", "STD"),
                      help="mean and standard deviation of the solvent noise of the input")
    extra = parser.add_argument_group("Additional")
    extra.add_argument("--cleaningStrength", "--cleaningStrengh", dest="cleaning", type=float, default=None,
                       help="remove small disconnected blobs (0..1; off by default)")
    extra.add_argument("-b", "--batch_size", dest="batch_size", type=int, default=None,
                       help="cubes per network call (default: 8 on CPU, from the free memory on a GPU); "
                            "lower it on GPU out-of-memory")
    extra.add_argument("-g", "--gpuIds", dest="gpu", default=None, metavar="IDS",
                      help="GPU ids, e.g. 0 or 0,1 (first is used); -1 = CPU")
    extra.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where the network runs (default auto: GPU when there is one)")
    extra.add_argument("-s", "--samplingRate", dest="sampling", type=float, default=None,
                       help="voxel size in A, overriding the header's")
    extra.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    adv = parser.add_argument_group("Advanced")
    from .config import DEFAULT_STRIDE

    adv.add_argument("--stride", type=int, default=DEFAULT_STRIDE,
                     help=f"voxels between cube starts (default {DEFAULT_STRIDE}; the original used 16)")
    adv.add_argument("--blend", choices=("gaussian", "constant"), default="gaussian",
                     help="gaussian (default) or constant (uniform averaging, like the original)")
    adv.add_argument("--lattice", choices=("fcc", "cubic"), default=None,
                     help="which cubes of the grid run: fcc = half of them in a 3-D checkerboard (default with "
                          "gaussian blending and a stride of at most half the cube), cubic = all (the original; "
                          "default otherwise)")
    adv.add_argument("--resolution", type=float, default=None, metavar="A",
                     help="keep the network's output up to this resolution (A) and the input's data beyond it "
                          "(default: the half-map FSC-0.143 with -i2; no limit for a single map)")
    adv.add_argument("--no-resolution-limit", dest="limit_resolution", action="store_false",
                     help="keep everything the network returns, also beyond the resolution of the data")
    adv.add_argument("--no-null-correction", dest="null_correction", action="store_false",
                     help="keep the network's response to pure noise (a faint fixed pattern tied to the cube "
                          "grid) instead of subtracting it")
    adv.add_argument("--weights", default=None, metavar="PATH.pt",
                     help="use these weights (model card PATH.json beside it) instead of -p")
    out = parser.add_argument_group("Output")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    out.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    out.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    out.add_argument("--version", action="version", version=f"deepemhancer {__version__}")
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)


def _gpu_ids(text: str | None) -> tuple[str, tuple[int, ...]]:
    """Parse ``-g``: None -> (auto, ()), "-1" -> (cpu, ()), "0,1" -> (cuda, (0, 1))."""
    from .errors import InputError

    if text is None or not text.strip():
        return "auto", ()
    try:
        ids = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise InputError(f"invalid GPU ids {text!r}: expected e.g. 0 or 0,1 (or -1 for CPU)") from None
    if ids and all(i < 0 for i in ids):
        return "cpu", ()
    return "cuda", ids


def config_from_args(args: argparse.Namespace):
    """Turn parsed options into an :class:`EnhanceConfig` (validation happens there)."""
    from pathlib import Path

    from .config import EnhanceConfig, InferenceConfig, NormalizationConfig, TilingConfig

    if args.mask:
        norm = NormalizationConfig(mode="mask", mask=Path(args.mask))
    elif args.noiseStats:
        norm = NormalizationConfig(mode="stats", noise_mean=args.noiseStats[0], noise_std=args.noiseStats[1])
    else:
        norm = NormalizationConfig()
    device, ids = _gpu_ids(args.gpu)
    if args.device != "auto":
        device = args.device
        if device == "cpu":
            ids = ()
    return EnhanceConfig(
        model=args.model,
        weights=Path(args.weights) if args.weights else None,
        normalization=norm,
        tiling=TilingConfig(stride=args.stride, blend=args.blend, lattice=args.lattice),
        inference=InferenceConfig(device=device, gpu_ids=ids, batch_size=args.batch_size,
                                  null_correction=getattr(args, "null_correction", True)),
        cleaning_strength=args.cleaning,
        resolution=getattr(args, "resolution", None),
        limit_resolution=getattr(args, "limit_resolution", True),
    )


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


def _raise_on_sigterm() -> dict:
    """Turn SIGTERM (and SIGINT) into KeyboardInterrupt so that temporary files are removed on the way out.

    Only the first signal raises: later ones are ignored, so a second Ctrl-C or a kill right after the
    first cannot interrupt the clean-up or the error message (SIGKILL still works). SIGINT is left alone
    when it is ignored (a background job). Returns the previous handlers, for :func:`_restore_signals`.
    """

    fired = []

    def handler(signum, frame):  # noqa: ARG001
        if not fired:  # (setting SIG_IGN here instead would make Python warn about pending signals)
            fired.append(signum)
            raise KeyboardInterrupt("terminated" if signum == signal.SIGTERM else "")

    previous = {}
    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, handler)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not in the main thread
        pass
    return previous


def _restore_signals(previous: dict) -> None:
    for sig, old in previous.items():
        try:
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        except (ValueError, TypeError):
            pass


def run_enhance(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input_list:
        if args.input or args.half2 or args.output:
            parser.error("--inputList cannot be combined with -i/-i2/-o")
    elif not (args.input and args.output):
        parser.error("the following arguments are required: -i/--inputMap, -o/--outputMap")
    setup_logging(args.verbose, args.quiet)
    return _guarded(lambda: _enhance(args), args.debug)


def read_job_list(path: str) -> list[tuple[list[str], str]]:
    """Parse an ``--inputList`` file: one job per line, ``MAP OUT`` or ``HALF1 HALF2 OUT``; ``#`` comments."""
    from .errors import InputError

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


def _enhance(args: argparse.Namespace) -> int:
    from .errors import DeepEMhancerError
    from .pipeline import enhance_file, load

    config = config_from_args(args)
    if args.sampling is not None:
        log.warning("-s/--samplingRate %.4g overrides the voxel size in the header", args.sampling)
    if not args.input_list:
        jobs = [([args.input] + ([args.half2] if args.half2 else []), args.output)]
    else:
        jobs = read_job_list(args.input_list)
    cache: list = []

    def model():  # loaded once, after the first job's inputs have been checked
        if not cache:
            cache.append(load(config))
        return cache[0]

    failed = 0
    code = 0
    for number, (inputs, output) in enumerate(jobs, 1):
        t0 = time.perf_counter()
        if len(jobs) > 1:
            log.info("Job %d/%d: %s -> %s", number, len(jobs), " + ".join(inputs), output)
        try:
            out = enhance_file(inputs, output, config=config, force=args.force, model=model,
                               progress=ProgressReporter(), voxel_size=args.sampling)
        except DeepEMhancerError as exc:
            if len(jobs) == 1:
                raise
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            failed, code = failed + 1, max(code, exc.exit_code)
            continue
        log.info("Done in %.1f s: %s", time.perf_counter() - t0, out)
    if len(jobs) > 1:
        log.info("%d of %d jobs succeeded", len(jobs) - failed, len(jobs))
    return code


def _guarded(func, debug: bool) -> int:
    """Run ``func`` mapping engine errors to one stderr line and an exit code."""
    from .errors import DeepEMhancerError

    previous = _raise_on_sigterm()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _log_warning  # library warnings as one log line each, not source dumps
            return int(func() or 0)
    except DeepEMhancerError as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        if debug:
            raise
        print(_OUT_OF_MEMORY, file=sys.stderr)
        return 4
    except KeyboardInterrupt as exc:
        previous.clear()  # keep ignoring further signals while the process exits
        if debug:
            raise
        print(f"error: {'terminated' if str(exc) == 'terminated' else 'interrupted'}; no output written",
              file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: still one line, the traceback with --debug
        if debug:
            raise
        if isinstance(exc, RuntimeError) and any(m in str(exc) for m in _ALLOC_FAILURES):
            print(_OUT_OF_MEMORY, file=sys.stderr)  # torch reports failed allocations as RuntimeError
            return 4
        print(f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback "
              "and please report it)", file=sys.stderr)
        return 1
    finally:
        _restore_signals(previous)


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    logging.getLogger("py.warnings").warning("%s: %s", category.__name__, _one_line(message))


_OUT_OF_MEMORY = "error: out of memory; use a smaller map, fewer cubes per call (-b) or a bigger machine"
_ALLOC_FAILURES = ("can't allocate memory", "not enough memory", "out of memory", "std::bad_alloc")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepemhancer`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        name, rest = argv[0], argv[1:]
        module = importlib.import_module(SUBCOMMANDS[name][0])
        parser = argparse.ArgumentParser(prog=f"deepemhancer {name}", description=SUBCOMMANDS[name][1])
        add = getattr(module, f"add_{name}_args", None) or module.add_args
        run = getattr(module, f"run_{name}", None) or module.run
        add(parser)
        parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        if not any(a.dest == "verbose" for a in parser._actions):
            parser.add_argument("-v", "--verbose", action="count", default=0)
        args = parser.parse_args(rest)
        setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
        return _guarded(lambda: run(args), args.debug)
    if argv and argv[0] == "enhance":
        argv = argv[1:]
    return run_enhance(argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
