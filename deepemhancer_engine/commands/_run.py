"""Running a subcommand: logging set-up, and errors, signals and warnings turned into one stderr line and an
exit code (0 success, 1 bug, 2 bad input, 3 weights problem, 4 device or memory problem, 130 interrupted)."""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from collections.abc import Callable

_OUT_OF_MEMORY = "error: out of memory; use a smaller map, fewer cubes per call (-b) or a bigger machine"
_ALLOC_FAILURES = ("can't allocate memory", "not enough memory", "out of memory", "std::bad_alloc")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def guarded(func: Callable[[], int | None], debug: bool) -> int:
    """Run ``func`` mapping engine errors to one stderr line and an exit code (``debug``: re-raise)."""
    from ..errors import DeepEMhancerError

    previous = _raise_on_sigterm()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _log_warning  # library warnings as one log line each, not source dumps
            return int(func() or 0)
    except DeepEMhancerError as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
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
    except ModuleNotFoundError as exc:  # a package the engine needs is not in this environment
        if debug:
            raise
        print(missing_package(exc), file=sys.stderr)
        return 4
    except Exception as exc:  # a bug or an unforeseen failure: still one line, the traceback with --debug
        if debug:
            raise
        if isinstance(exc, RuntimeError) and any(m in str(exc) for m in _ALLOC_FAILURES):
            print(_OUT_OF_MEMORY, file=sys.stderr)  # torch reports failed allocations as RuntimeError
            return 4
        print(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the traceback "
              "and please report it)", file=sys.stderr)
        return 1
    finally:
        _restore_signals(previous)


#: Which extra of the engine distribution brings a package (the rest are its plain dependencies).
_EXTRA_OF = {"gemmi": "train", "matplotlib": "plots"}


def missing_package(exc: ModuleNotFoundError) -> str:
    """One line saying which package is missing and how to install it."""
    name = (exc.name or str(exc)).split(".")[0]
    extra = _EXTRA_OF.get(name)
    requirement = f"deepemhancer-engine[{extra}]" if extra else "deepemhancer-engine"
    hint = "pip install torch (a CPU or CUDA build, README 'Installation'), then " if name == "torch" else ""
    return (f"error: the Python package '{name}' is not installed in this environment; {hint}"
            f"pip install '{requirement}' (in Scipion: scipion3 installb deepemhancer)")


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


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    logging.getLogger("py.warnings").warning("%s: %s", category.__name__, one_line(message))
