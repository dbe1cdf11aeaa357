"""deepemhancer: enhance cryo-EM maps with a 3D U-Net (DeepEMhancer, in PyTorch).

Typical use::

    deepemhancer -i half1.mrc -i2 half2.mrc -o enhanced.mrc
    deepemhancer -i map.mrc -o enhanced.mrc -p wideTarget
    deepemhancer -i half1.mrc -i2 half2.mrc -o enhanced.mrc -m mask.mrc

Other commands: ``deepemhancer info`` (model cards), ``deepemhancer evaluate`` (metrics and
honesty checks), ``deepemhancer simulate`` / ``deepemhancer train`` (training data and trainer),
``deepemhancer null-response`` (the noise response shipped beside the weights).

Exit codes: 0 success, 2 bad input, 3 weights problem, 4 device or memory problem, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from .commands._run import guarded, setup_logging

#: First word of the command line -> (module in ``commands``, one-line description). No known first word:
#: ``enhance`` (the original DeepEMhancer's command line).
SUBCOMMANDS = {
    "enhance": ("enhance", "enhance a map (the default: 'deepemhancer -i ...' is 'deepemhancer enhance -i ...')"),
    "info": ("info", "print the model cards of the shipped models"),
    "evaluate": ("evaluate", "compare with a model and baselines; honesty checks"),
    "simulate": ("simulate", "simulate training pairs from atomic models"),
    "train": ("train", "train a model on simulated pairs"),
    "null-response": ("nullresponse", "measure the network's response to pure noise and ship it beside the weights"),
}
DEFAULT_COMMAND = "enhance"


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f".commands.{SUBCOMMANDS[name][0]}", __package__)


def build_parser(name: str = DEFAULT_COMMAND) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (default: enhance, whose help also lists the other commands)."""
    module = command_module(name)
    if name == DEFAULT_COMMAND:
        width = max(len(k) for k in SUBCOMMANDS)
        parser = argparse.ArgumentParser(
            prog="deepemhancer",
            description=__doc__.split("\n\n")[0],
            epilog="Commands:\n" + "\n".join(f"  deepemhancer {k:{width}s} {v[1]}" for k, v in SUBCOMMANDS.items()
                                             if k != DEFAULT_COMMAND)
            + "\n\nEnvironment:"
            "\n  DEEPEMHANCER_WEIGHTS_DIR  folder of NAME.pt + NAME.json to use instead of the shipped weights"
            "\n  DEEPEMHANCER_CACHE        cache of the network's noise response for voxels coarser than 1 A"
            "\n                            (default ~/.cache/deepemhancer; 'off': no cache)",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    else:
        parser = argparse.ArgumentParser(prog=f"deepemhancer {name}", description=SUBCOMMANDS[name][1])
    module.add_args(parser)
    dests = {a.dest for a in parser._actions}
    if "debug" not in dests:
        parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    if "verbose" not in dests:
        parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def config_from_args(args: argparse.Namespace):
    """The :class:`config.EnhanceConfig` of parsed enhance options (see :mod:`.commands.enhance`)."""
    from .commands.enhance import config_from_args

    return config_from_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepemhancer`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command_line = ["deepemhancer", *argv]  # recorded in the output's provenance
    name = DEFAULT_COMMAND
    if argv and argv[0] in SUBCOMMANDS:
        name, argv = argv[0], argv[1:]
    parser = build_parser(name)
    args = parser.parse_args(argv)
    args.command_line = command_line
    module = command_module(name)
    check = getattr(module, "check_args", None)
    if check is not None:
        check(parser, args)
    setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    return guarded(lambda: module.main(args), args.debug)


def run() -> None:
    """The ``deepemhancer`` console script: :func:`main`, then :func:`exit_now` with its exit code."""
    exit_now(main())


def exit_now(code: int) -> None:
    """End the process with ``code`` without the interpreter's teardown.

    Tearing down the modules of an interpreter that imported PyTorch takes 0.5-2 s on 2 cores (docs/design.md,
    "Fixed costs"); every output is already written atomically and closed by then, so logging and the standard
    streams are flushed and the process ends at once (``os._exit``).
    """
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(int(code or 0))


if __name__ == "__main__":  # pragma: no cover
    run()
