"""What made an enhanced map, recorded with it for users inside and outside Scipion.

Beside ``OUT.mrc`` the engine writes ``OUT.json`` (the sidecar: engine version, every option, the input
files, the weights with their SHA-256, the half-map FSC-0.143, the resolution limit used, the threads and
the timings) and, with two half maps, ``OUT_fsc.tsv`` (the half-map FSC curve, in the columns of
``evaluate``'s ``fsc_curves.tsv``). The map's MRC header labels repeat the essentials. The sidecar is a
plain dict: other parts add their own sections before it is written (e.g. ``record["confidence"]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Keys of the sidecar's top level, in the order written (others may be added after them).
SIDECAR_KEYS = ("engine", "command", "inputs", "output", "weights", "options", "resolution", "threads",
                "timings_s")
#: The FSC curve's name in ``OUT_fsc.tsv`` (the same name as ``evaluate``'s raw-halves curve).
HALF_MAP_CURVE = "raw halves"
#: MRC header labels are 80 characters; the file holds 10.
LABEL_CHARS, MAX_LABELS = 80, 10
#: Characters of the weights' SHA-256 shown in labels and summaries.
SHA_PREFIX = 12


def sidecar_path(output: str | os.PathLike) -> Path:
    """``OUT.json`` for ``OUT.mrc`` (also ``OUT.map``, ``OUT.mrc.gz``)."""
    return _stem(output).with_name(_stem(output).name + ".json")


def fsc_path(output: str | os.PathLike) -> Path:
    """``OUT_fsc.tsv`` for ``OUT.mrc``."""
    return _stem(output).with_name(_stem(output).name + "_fsc.tsv")


def _stem(output: str | os.PathLike) -> Path:
    out = Path(output)
    name = out.name[:-3] if out.name.endswith(".gz") else out.name
    return out.with_name(name.rsplit(".", 1)[0] if "." in name else name)


def limit_used(config, d_half: float | None) -> float | None:
    """The resolution (A) the output is limited to, None when it is not limited (mirrors
    :func:`pipeline._postprocess`: ``config.resolution`` when given, else the half-map ``d_half``)."""
    if not config.limit_resolution:
        return None
    return config.resolution if config.resolution is not None else d_half


def header_labels(card, weights_sha: str, limit: float | None) -> list[str]:
    """MRC header labels naming the engine, the weights (name, version, SHA-256 prefix) and the limit."""
    from .version import __version__

    text = [f"deepemhancer {__version__} (PyTorch): enhanced map",
            f"weights {card.name} {card.version or '?'} sha256:{weights_sha[:SHA_PREFIX]}",
            f"resolution limit {limit:.3g} A" if limit else "no resolution limit"]
    return [t[:LABEL_CHARS] for t in text]


def build(*, config, inputs: Sequence[str | os.PathLike], output: str | os.PathLike, grid, model,
          d_half: float | None, voxel_size_override: float | None, timings: dict[str, float]) -> dict[str, Any]:
    """The sidecar dict of one enhancement (see the module docstring)."""
    from .version import __version__

    card = model.card
    limit = limit_used(config, d_half)
    return {
        "engine": {"name": "deepemhancer", "version": __version__, "python": platform.python_version(),
                   "torch": _torch_version()},
        "command": None,  # the CLI fills in its argv
        "inputs": [str(Path(p).resolve()) for p in inputs],
        "output": {"map": str(Path(output).resolve()), "shape_zyx": list(grid.shape),
                   "voxel_size_A": list(grid.voxel_size), "origin_A": list(grid.origin),
                   "voxel_size_overridden": voxel_size_override is not None},
        "weights": {"name": card.name, "version": card.version, "sha256": weights_sha(model),
                    "file": str(model.weights_path), "trained_on": "simulated data (this project's weights)",
                    "notes": card.notes},
        "options": _jsonable(dataclasses.asdict(config)),
        "resolution": {"half_map_fsc0.143_A": _finite(d_half), "limit_A": _finite(limit),
                       "limited": limit is not None, "null_correction": config.inference.null_correction},
        "threads": thread_counts(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def weights_sha(model) -> str:
    """SHA-256 of the weights file (the model card's, which loading has checked against the file)."""
    return str(getattr(model.card, "sha256", "") or "")


def thread_counts() -> dict[str, Any]:
    """The thread limits this process runs with (torch's, and the BLAS/OpenMP environment)."""
    counts: dict[str, Any] = {k: os.environ.get(k) for k in THREAD_ENV}
    with contextlib.suppress(ImportError):
        import torch

        counts["torch"] = torch.get_num_threads()
    return counts


#: Environment variables that bound the threads of OpenMP, MKL and OpenBLAS (read when they load).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_threads(n: int | None) -> None:
    """Use at most ``n`` threads: the BLAS/OpenMP environment (effective when set before numpy and torch
    load, as the CLI does) and torch's intra-op threads. None: leave the defaults."""
    if n is None:
        return
    for name in THREAD_ENV:
        os.environ[name] = str(n)
    import torch

    torch.set_num_threads(n)


def write(output: str | os.PathLike, record: dict[str, Any], curve=None) -> list[Path]:
    """Write the FSC curve (when given) and the sidecar beside ``output``, each atomically; on failure
    neither is left behind. Returns the paths written."""
    from .errors import InputError
    from .evaluate import write_curves_tsv
    from .io import atomic_write

    written: list[Path] = []
    path = fsc_path(output)
    try:
        if curve is not None:
            written.append(atomic_write(path, lambda tmp: write_curves_tsv({HALF_MAP_CURVE: curve}, Path(tmp))))
            record.setdefault("files", {})["fsc_curve"] = str(path.resolve())
        else:  # a one-map run over an earlier half-map run's files: its curve is not this map's
            remove([path])
        path = sidecar_path(output)
        text = json.dumps(record, indent=1, default=_default)
        written.append(atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n")))
    except OSError as err:
        remove(written)
        raise InputError(f"{path}: cannot write ({getattr(err, 'strerror', None) or err})") from None
    except BaseException:
        remove(written)
        raise
    return written


def remove(paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _jsonable(value):
    return json.loads(json.dumps(value, default=_default))


def _default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value"):  # enums
        return value.value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _torch_version() -> str | None:
    with contextlib.suppress(ImportError):
        import torch

        return str(torch.__version__)
    return None
