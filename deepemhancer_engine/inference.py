"""Run the network over a whole map: device choice, batched cube prediction and blending.

:func:`select_device` turns an :class:`~config.InferenceConfig` into a ``torch.device`` (CPU is
first-class; CUDA is an optimisation). :class:`Predictor` pads the map to at least one cube, splits it
into cubes (:mod:`tiling`), runs them through the network in batches under ``torch.inference_mode``
(fp16 autocast on CUDA by default), blends the overlaps and removes the padding.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional, Union

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .config import InferenceConfig, TilingConfig
from .errors import DeviceError, InputError
from .tiling import TileGrid, TileMerger, iter_batches, pad_to_tile

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
AmpOption = Union[None, bool, str]
_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


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


def _amp_dtype(amp: AmpOption, device: torch.device) -> Optional[torch.dtype]:
    if amp is None:
        return torch.float16 if device.type == "cuda" else None
    if amp is False or amp == "off":
        return None
    if amp is True:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp in _AMP_DTYPES:
        return _AMP_DTYPES[amp]  # type: ignore[index]
    raise InputError(f"invalid mixed-precision option {amp!r}: choose None, False, 'off', 'fp16' or 'bf16'")


class Predictor:
    """Applies a cube network to whole maps.

    Args:
        model: network mapping ``[B, 1, T, T, T]`` to ``[B, 1, T, T, T]``; moved to ``device`` and put in
            eval mode.
        device: where the network runs (see :func:`select_device`).
        batch_size: cubes per forward pass.
        amp: mixed precision: None = fp16 autocast on CUDA, off on CPU; False/'off'; 'fp16'; 'bf16'.

    Example:
        >>> from deepemhancer_engine.model import UNet3D
        >>> pred = Predictor(UNet3D(filters=(2, 4, 8)), torch.device("cpu"), batch_size=2)
        >>> pred.predict(np.zeros((20, 30, 40), np.float32), TilingConfig(tile=16, stride=8)).shape
        (20, 30, 40)
    """

    def __init__(self, model: nn.Module, device: torch.device, batch_size: int, *, amp: AmpOption = None) -> None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.amp_dtype = _amp_dtype(amp, self.device)

    def _forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = torch.from_numpy(batch).unsqueeze(1).to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            y = self.model(x)
        return y.float().squeeze(1).cpu().numpy()

    def predict(
        self, array: npt.NDArray[np.float32], tiling: TilingConfig, progress: ProgressFn | None = None
    ) -> npt.NDArray[np.float32]:
        """Enhance a (Z, Y, X) map cube by cube; returns float32 of the input shape.

        Args:
            array: normalised (Z, Y, X) map at the network's voxel size.
            tiling: cube size, stride and blend mode.
            progress: called as ``progress(done_cubes, total_cubes)`` after each batch.

        Raises:
            InputError: not a 3-D array, or a cube size the network cannot take.
            DeviceError: the GPU ran out of memory.
        """
        array = np.asarray(array)
        if array.ndim != 3:
            raise InputError(f"expected a 3-D map, got an array of shape {array.shape}")
        multiple = int(getattr(self.model, "size_multiple", 1))
        if tiling.tile % multiple:
            raise InputError(f"cube size {tiling.tile} must be divisible by {multiple} for this network")
        padded, unpad = pad_to_tile(np.ascontiguousarray(array, dtype=np.float32), tiling.tile)
        grid = TileGrid.from_shape(padded.shape, tiling.tile, tiling.stride)
        merger = TileMerger(grid, tiling.blend)
        log.info(
            "Predicting %d cubes of %d^3 (%s per axis, stride %d, %s blending) on %s, batch %d",
            grid.n_tiles, grid.tile, "x".join(str(len(s)) for s in grid.starts), grid.stride,
            tiling.blend, self.device, self.batch_size,
        )
        t0, done = time.perf_counter(), 0
        with torch.inference_mode():
            for batch, starts in iter_batches(padded, grid, self.batch_size):
                try:
                    out = self._forward(batch)
                except torch.cuda.OutOfMemoryError as exc:
                    torch.cuda.empty_cache()
                    raise DeviceError(
                        f"the GPU ran out of memory with batch size {self.batch_size}; "
                        "lower the batch size (-b) or use --device cpu"
                    ) from exc
                merger.add(out, starts)
                done += len(starts)
                if progress is not None:
                    progress(done, grid.n_tiles)
        result = merger.result()[unpad]
        log.info("Predicted %d cubes in %.1f s", grid.n_tiles, time.perf_counter() - t0)
        return np.ascontiguousarray(result, dtype=np.float32)
