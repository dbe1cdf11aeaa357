"""Where, in what precision and in what batches the network runs.

:func:`select_device` is the one place that turns a device request (``auto``, ``cpu``, ``cuda``, GPU
ids) into a ``torch.device``, with a clear error when CUDA is asked for and absent; inference and
training both use it. CPU is first-class; CUDA is an optimisation.

:class:`NetworkRunner` calls a cube network on batches of cubes: it owns the device, the precision
(autocast, and cuDNN's TF32 switch so that fp32 means fp32), the memory layout (channels-last-3d) and
the batch size (on a GPU, from a probe of the free memory). Defaults: fp16 autocast on CUDA; on CPU
bf16 autocast with channels-last-3d where the CPU computes bf16 natively (AVX512-BF16 or AMX), plain
fp32 elsewhere (emulated bf16 is slower than fp32); :data:`CPU_BATCH_SIZE` cubes per pass on CPU.
Why these and not others (``torch.compile``, other batch sizes): docs/design.md, "Inference speed
settings".
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator, Optional, Union

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .config import InferenceConfig
from .errors import DeviceError, InputError

log = logging.getLogger(__name__)

AmpOption = Union[None, bool, str]
_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

#: Cubes per forward pass on CPU when the batch size is "auto": the paper's batch; smaller batches are
#: no faster per cube (docs/design.md, "Inference speed settings").
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
    """The autocast dtype of ``amp`` on ``device`` (None: fp32); see :class:`NetworkRunner`."""
    if amp is None or amp == "auto":  # the fastest precision that keeps the output (docs/design.md)
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if amp is False or amp == "off":
        return None
    if amp is True:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp in _AMP_DTYPES:
        return _AMP_DTYPES[amp]  # type: ignore[index]
    raise InputError(f"invalid mixed-precision option {amp!r}: choose 'auto', 'off', 'fp16' or 'bf16'")


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


class NetworkRunner:
    """Calls a cube network on batches of cubes, in one precision, layout and batch size.

    Args:
        model: network mapping ``[B, 1, T, T, T]`` to ``[B, 1, T, T, T]``; moved to ``device`` and put in
            eval mode.
        device: where the network runs (see :func:`select_device`).
        batch_size: cubes per forward pass; None or ``"auto"``: :data:`CPU_BATCH_SIZE` on CPU, as many as
            fit in :data:`CUDA_MEMORY_FRACTION` of the free memory on a GPU (at most :data:`MAX_CUDA_BATCH`).
        amp: mixed precision: None or ``"auto"`` = fp16 autocast on CUDA, bf16 autocast on CPUs with native
            bf16 (AVX512-BF16/AMX), else fp32; False or ``"off"`` = fp32 (on CUDA without TF32); ``"fp16"``;
            ``"bf16"``; True = fp16 on CUDA, bf16 elsewhere.
        channels_last: channels-last-3d memory layout; None = on for CPU bf16 (where oneDNN is fastest
            with it), off otherwise (slower on GPUs, no gain for CPU fp32).

    Example:
        >>> from deepemhancer_engine.model import UNet3D
        >>> run = NetworkRunner(UNet3D(filters=(2, 4, 8)), torch.device("cpu"), batch_size=2, amp="off")
        >>> run.forward(np.zeros((2, 16, 16, 16), np.float32)).shape, run.precision
        ((2, 16, 16, 16), 'float32')
    """

    def __init__(self, model: nn.Module, device: torch.device | str, *, batch_size: Union[int, str, None] = None,
                 amp: AmpOption = None, channels_last: Optional[bool] = None) -> None:
        self.batch_size = _check_batch(batch_size)
        self.device = torch.device(device)
        self.amp_dtype = _amp_dtype(amp, self.device)
        if channels_last is None:
            channels_last = self.device.type == "cpu" and self.amp_dtype is torch.bfloat16
        self.channels_last = bool(channels_last)
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed cube shape: let cuDNN pick the fastest kernels

    @property
    def precision(self) -> str:
        """The dtype the network computes in: ``float32``, ``bfloat16`` or ``float16``."""
        return str(self.amp_dtype or torch.float32).replace("torch.", "")

    @property
    def size_multiple(self) -> int:
        """Cube edges must be multiples of this (the network's downsampling factor; 1 if it has none)."""
        return int(getattr(self.model, "size_multiple", 1))

    def describe(self) -> str:
        """The precision and layout for a log line: ``", bfloat16 autocast, channels-last"`` or ``""``."""
        amp = f", {self.precision} autocast" if self.amp_dtype else ""
        return amp + (", channels-last" if self.channels_last else "")

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The precision context of a forward pass: autocast when ``amp`` is on; on CUDA with ``amp`` off,
        cuDNN's TF32 convolutions (PyTorch's default) are turned off too, so that fp32 means fp32."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            if self.device.type != "cuda":
                yield
                return
            before = _set_cudnn_tf32(self.amp_dtype is not None)
            try:
                yield
            finally:
                _set_cudnn_tf32(before)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` (``[B, 1, T, T, T]`` on :attr:`device`), in the runner's
        layout and precision (the output's dtype may be the autocast one)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with self.autocast():
            return self.model(x)

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The float32 ``[B, T, T, T]`` outputs for a ``[B, T, T, T]`` batch of cubes."""
        with torch.inference_mode():
            y = self.run(torch.from_numpy(batch).unsqueeze(1).to(self.device, non_blocking=True))
            return y.float().squeeze(1).contiguous().cpu().numpy()

    def resolve_batch_size(self, tile: int) -> int:
        """The batch size for cubes of ``tile`` voxels (measures the GPU when 'auto')."""
        if self.batch_size is not None:
            return self.batch_size
        if self.device.type != "cuda":
            return CPU_BATCH_SIZE
        dev = self.device
        torch.cuda.synchronize(dev)
        free, _ = torch.cuda.mem_get_info(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        probe = 2
        autotune = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = False  # cuDNN's autotuning is paid per input shape: not for the probe's
        try:
            with torch.inference_mode():
                self.run(torch.zeros((probe, 1, tile, tile, tile), device=dev))
        finally:
            torch.backends.cudnn.benchmark = autotune
        per_cube = (torch.cuda.max_memory_allocated(dev) - base) / probe
        n = batch_from_memory(free, per_cube)
        log.info("GPU batch size %d (%.0f MB per cube, %.1f GB free)", n, per_cube / 2**20, free / 2**30)
        return n
