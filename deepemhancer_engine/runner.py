"""Where and in what precision the network runs: the device chooser and the precision defaults.

:func:`select_device` is the one place that turns a device request (``auto``, ``cpu``, ``cuda``, GPU
ids) into a ``torch.device``, with a clear error when CUDA is asked for and absent; inference and
training both use it. CPU is first-class; CUDA is an optimisation.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Optional, Union

import numpy as np
import torch

from .config import InferenceConfig
from .errors import DeviceError, InputError

log = logging.getLogger(__name__)

AmpOption = Union[None, bool, str]
_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

#: Cubes per forward pass on CPU when the batch size is "auto" (the paper's batch of 8; measured on 2
#: cores: 4 and 8 run at the same cubes/s, see benchmarks/results/speed.md).
CPU_BATCH_SIZE = 8
#: Upper bound of the automatic GPU batch size.
MAX_CUDA_BATCH = 64
#: Share of the free GPU memory the automatic batch size may use.
CUDA_MEMORY_FRACTION = 0.5
def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def select_device(config: InferenceConfig) -> torch.device:
    """Return the device named by ``config`` (``device`` and ``gpu_ids``).

    ``cpu`` -> CPU; ``cuda`` -> the first GPU (or ``gpu_ids[0]``), DeviceError without CUDA;
    ``auto`` -> CUDA when available, else CPU. GPU ids count the GPUs visible to this process
    (after ``CUDA_VISIBLE_DEVICES``); only the first id is used. On CPU, torch's thread count is
    capped at the CPUs this process may run on.

    Raises:
        DeviceError: CUDA requested but unavailable, or an invalid GPU id.
    """
    has_cuda = torch.cuda.is_available()
    if config.device == "cpu":
        if config.gpu_ids:
            log.warning("GPU ids %s ignored: running on CPU as requested", list(config.gpu_ids))
        return _cpu()
    if config.device == "auto" and not has_cuda:
        if config.gpu_ids:
            raise DeviceError(
                f"GPU ids {list(config.gpu_ids)} were given but no GPU is available; use --device cpu"
            )
        log.info("Running on CPU (no GPU found)")
        return _cpu()
    if not has_cuda:
        raise DeviceError(
            "CUDA was requested but no GPU is available (no CUDA device or driver, or a CPU-only torch); "
            "use --device cpu or --device auto"
        )
    n = torch.cuda.device_count()
    index = config.gpu_ids[0] if config.gpu_ids else 0
    if index >= n:
        raise DeviceError(f"GPU id {index} is not available: this process sees {n} GPU(s) (ids 0..{n - 1})")
    if len(config.gpu_ids) > 1:
        log.warning("Using only GPU %d of the ids %s (one GPU per run)", index, list(config.gpu_ids))
    device = torch.device(f"cuda:{index}")
    log.info("Running on GPU %d (%s)", index, torch.cuda.get_device_name(device))
    return device


def _cpu() -> torch.device:
    cpus = _usable_cpus()
    if torch.get_num_threads() > cpus:
        torch.set_num_threads(cpus)
    log.info("Running on CPU with %d threads", torch.get_num_threads())
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 convolutions pay off.

    On CPUs without it (e.g. AVX2-only) oneDNN emulates bf16 and is slower than fp32.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except RuntimeError:  # pragma: no cover - odd builds
            continue
    return False


def _amp_dtype(amp: AmpOption, device: torch.device) -> Optional[torch.dtype]:
    if amp is None:  # measured defaults (benchmarks/results/speed.md)
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if amp is False or amp == "off":
        return None
    if amp is True:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp in _AMP_DTYPES:
        return _AMP_DTYPES[amp]  # type: ignore[index]
    raise InputError(f"invalid mixed-precision option {amp!r}: choose None, False, 'off', 'fp16' or 'bf16'")


def batch_from_memory(free_bytes: float, per_cube_bytes: float, *, cap: int = MAX_CUDA_BATCH,
                      fraction: float = CUDA_MEMORY_FRACTION) -> int:
    """Cubes per GPU call that fit in ``fraction`` of ``free_bytes`` at ``per_cube_bytes`` each (1..cap).

    Example:
        >>> batch_from_memory(80e9, 300e6)
        64
        >>> batch_from_memory(4e9, 300e6)
        6
        >>> batch_from_memory(1e8, 300e6)
        1
    """
    n = int(fraction * free_bytes // max(per_cube_bytes, 1.0))
    return max(1, min(int(cap), n))


def _check_batch(batch_size: Union[int, str, None]) -> Optional[int]:
    if batch_size is None or batch_size == "auto":
        return None
    if not isinstance(batch_size, (int, float, np.integer)) or isinstance(batch_size, bool) \
            or int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
    return int(batch_size)


def _set_cudnn_tf32(allow: bool) -> bool:
    """Set cuDNN's TF32 switch; returns its previous value (newer torch warns that the switch will be
    renamed: silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = bool(torch.backends.cudnn.allow_tf32)
        torch.backends.cudnn.allow_tf32 = allow
    return before
