"""Options shared by the subcommands that run the network (``enhance``, ``evaluate``) and their mapping to
the configuration, so that a flag means the same in both: the network (``-p``, ``--weights``) and where
and how it runs (``--device``, ``-g``, ``-b``, ``--amp``, ``--channels-last``)."""

from __future__ import annotations

import argparse
from pathlib import Path

MODEL_CHOICES = "{tightTarget,wideTarget,highRes}"
AMP_CHOICES = ("auto", "off", "fp16", "bf16")
CHANNELS_LAST_CHOICES = ("auto", "on", "off")


def add_model_arg(group) -> None:
    """``-p/--processingType`` (dest ``model``); validated by :class:`config.EnhanceConfig`, whose error
    names the valid models."""
    group.add_argument("-p", "--processingType", dest="model", default="tightTarget", metavar=MODEL_CHOICES,
                       help="model: tightTarget (default), wideTarget (wider mask), highRes (maps < 4 A)")


def add_weights_arg(group) -> None:
    group.add_argument("--weights", default=None, metavar="PATH.pt",
                       help="use these weights (model card PATH.json beside it) instead of -p")


def add_device_args(group) -> None:
    """``-b/--batch-size`` (``--batch_size``, the original's spelling, too), ``-g``, ``--device``, ``--amp``,
    ``--channels-last``."""
    group.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=int, default=None,
                       help="cubes per network call (default: 8 on CPU, from the free memory on a GPU); "
                            "lower it on GPU out-of-memory")
    group.add_argument("-g", "--gpuIds", dest="gpu", default=None, metavar="IDS",
                       help="GPU ids, e.g. 0 or 0,1 (first is used); -1 = CPU")
    add_device_choice(group)
    group.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                       help="precision of the network: auto (default: fp16 on a GPU, bf16 on CPUs with native "
                            "bf16, else float32), off (float32), fp16, bf16")
    group.add_argument("--channels-last", dest="channels_last", choices=CHANNELS_LAST_CHOICES, default="auto",
                       help="channels-last memory layout of the cubes (default auto: on for bf16 on a CPU)")


def add_device_choice(group) -> None:
    """``--device {auto,cpu,cuda}``: the same option for running (enhance, evaluate) and training."""
    group.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where the network runs (default auto: GPU when there is one)")


def gpu_ids(text: str | None) -> tuple[str, tuple[int, ...]]:
    """Parse ``-g``: None -> (auto, ()), "-1" -> (cpu, ()), "0,1" -> (cuda, (0, 1))."""
    from ..errors import InputError

    if text is None or not text.strip():
        return "auto", ()
    try:
        ids = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise InputError(f"invalid GPU ids {text!r}: expected e.g. 0 or 0,1 (or -1 for CPU)") from None
    if ids and all(i < 0 for i in ids):
        return "cpu", ()
    return "cuda", ids


def weights_path(args: argparse.Namespace) -> Path | None:
    return Path(args.weights) if args.weights else None


def inference_config(args: argparse.Namespace, *, null_correction: bool = True, skip_solvent: bool = True):
    """The :class:`config.InferenceConfig` of the device options; ``--device`` wins over ``-g``."""
    from ..config import InferenceConfig

    device, ids = gpu_ids(args.gpu)
    if args.device != "auto":
        device = args.device
        if device == "cpu":
            ids = ()
    return InferenceConfig(device=device, gpu_ids=ids, batch_size=args.batch_size, null_correction=null_correction,
                           skip_solvent=skip_solvent, **precision_options(args))


def precision_options(args: argparse.Namespace) -> dict:
    """``--amp`` and ``--channels-last`` as :class:`config.InferenceConfig` fields (``amp``: auto|off|fp16|bf16,
    ``channels_last``: None|True|False); only values other than auto are passed, so the defaults stay
    those of the configuration."""
    options = {}
    if getattr(args, "amp", "auto") != "auto":
        options["amp"] = args.amp
    if getattr(args, "channels_last", "auto") != "auto":
        options["channels_last"] = args.channels_last == "on"
    return options


def deadline(text: str | None) -> float | None:
    """``--until``: ``HH:MM`` (UTC, today) or an ISO time -> epoch seconds."""
    if not text:
        return None
    import datetime as dt

    from ..errors import InputError

    try:
        if len(text) <= 5 and ":" in text:
            now = dt.datetime.now(dt.timezone.utc)
            h, m = (int(v) for v in text.split(":"))
            return now.replace(hour=h, minute=m, second=0, microsecond=0).timestamp()
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InputError(f"invalid time {text!r} for --until: expected HH:MM (UTC) or an ISO date and time") from None
