"""Run the network over a whole map: device choice, batched cube prediction and blending.

:func:`select_device` turns an :class:`~config.InferenceConfig` into a ``torch.device`` (CPU is
first-class; CUDA is an optimisation). :class:`Predictor` pads the map to at least one cube, splits it
into cubes (:mod:`tiling`), runs them through the network in batches under ``torch.inference_mode``,
blends the overlaps and removes the padding. With a mask, cubes that hold only solvent are not run.

Speed settings (measured on CPU and GPU, see ``benchmarks/results/speed.md``):

- CPU: bf16 autocast with the channels-last-3d layout where the CPU has native bf16 (AVX512-BF16 or
  AMX; ~2x over fp32 there), plain fp32 elsewhere; batch 4; threads capped at the usable CPUs.
  ``torch.compile`` is not used: it took ~3 min to compile on 2 cores and ran no faster.
- GPU: fp16 autocast, cuDNN autotuning, batch size from the free memory, pinned double-buffered
  host copies so that cutting and blending on the CPU overlap the network on the GPU, weights applied
  on the GPU.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Optional, Union

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .config import Lattice, TilingConfig
from .errors import DeviceError, InputError
from .runner import (
    CPU_BATCH_SIZE,
    AmpOption,
    _amp_dtype,
    _check_batch,
    _set_cudnn_tf32,
    batch_from_memory,
)
from .tiling import TileGrid, TileMerger, iter_batches, pad_to_tile, split_by_mask

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

#: Pure-noise cubes averaged to measure the network's response to an empty (solvent-only) cube (as many as
#: for the shipped responses: with 32, the estimate's own noise, the same in every output, made the noise
#: test's outputs correlate up to FSC 0.155 instead of 0.134 on a 1.52 A/voxel map).
NULL_CUBES = 128
#: Seed of those cubes (fixed: the correction, and so the output, is deterministic).
NULL_SEED = 20211
#: Cube starts are multiples of this where the stride allows (twice the U-Net's downsampling factor):
#: the grid of the original's stride-16 cubes, so every cube of the default stride is one the original
#: also evaluates (docs/design.md, "Aligned cube starts").
GRID_ALIGN = 16


def cube_alignment(tiling: TilingConfig, multiple: int) -> int:
    """The alignment of cube starts of ``tiling`` for a network shift-equivariant for shifts by
    ``multiple`` voxels.

    :data:`GRID_ALIGN` for the fcc lattice or a stride that is a multiple of it (other strides keep
    evenly spaced starts on multiples of ``multiple``: stride 40 on multiples of 16 would alternate gaps
    of 32 and 48, measured CC with the stride-16 average 0.9906 against 0.9934 at 256^3), when it is a
    multiple of ``multiple`` (> 1), at most ``stride`` and leaves no gap between cubes
    (``stride + align <= tile``, see :func:`tiling.axis_starts`); else ``multiple`` under the same
    conditions; else 1.

    Example:
        >>> cube_alignment(TilingConfig(), 8), cube_alignment(TilingConfig(stride=16, blend="constant"), 8)
        (16, 16)
        >>> cube_alignment(TilingConfig(stride=40), 8), cube_alignment(TilingConfig(stride=60), 8)
        (8, 1)
        >>> cube_alignment(TilingConfig(stride=24), 8), cube_alignment(TilingConfig(stride=24, lattice="cubic"), 8)
        (16, 8)
    """
    tile, stride = tiling.tile, tiling.stride
    if multiple > 1:
        grid = tiling.cube_lattice is Lattice.FCC or stride % GRID_ALIGN == 0
        for align in ((GRID_ALIGN, multiple) if grid else (multiple,)):
            if align % multiple == 0 and align <= stride and stride + align <= tile:
                return align
    return 1


def _band_noise(rng: np.random.Generator, n: int, tile: int, band: Optional[tuple[float, float, float]],
                std: float) -> npt.NDArray[np.float32]:
    """``n`` cubes of Gaussian noise with standard deviation ``std``, white or (``band``) with nothing
    beyond ``band[i]`` x Nyquist along axis i (what Fourier resampling to finer voxels leaves)."""
    noise = rng.normal(0.0, 1.0, (n, tile, tile, tile))
    if band is not None:
        spec = np.fft.rfftn(noise, axes=(1, 2, 3))
        for axis, b in zip((1, 2, 3), band):
            f = np.abs(np.fft.rfftfreq(tile) if axis == 3 else np.fft.fftfreq(tile))
            shape = [1, 1, 1, 1]
            shape[axis] = f.size
            spec *= (f <= 0.5 * b + 1e-9).reshape(shape)
        noise = np.fft.irfftn(spec, s=(tile, tile, tile), axes=(1, 2, 3))
    noise *= std / np.maximum(noise.std(axis=(1, 2, 3), keepdims=True), 1e-12)  # per cube: batch-independent
    return noise.astype(np.float32)


class Predictor:
    """Applies a cube network to whole maps.

    Args:
        model: network mapping ``[B, 1, T, T, T]`` to ``[B, 1, T, T, T]``; moved to ``device`` and put in
            eval mode.
        device: where the network runs (see :func:`select_device`).
        batch_size: cubes per forward pass; None or ``"auto"``: :data:`CPU_BATCH_SIZE` on CPU, as many as
            fit in half the free memory on a GPU (at most :data:`MAX_CUDA_BATCH`).
        amp: mixed precision: None = fp16 autocast on CUDA, bf16 autocast on CPUs with native bf16
            (AVX512-BF16/AMX), else fp32; False/'off'; 'fp16'; 'bf16'.
        channels_last: channels-last-3d memory layout; None = on for CPU bf16 (where oneDNN is fastest
            with it), off otherwise (slower on GPUs, no gain for CPU fp32).
        null_std: when set, subtract the network's *null response* from every cube before blending:
            the mean output, at each position of the cube, over :data:`NULL_CUBES` cubes of pure
            Gaussian noise of this standard deviation (the normalised noise level, 0.1). An input
            holding only noise should come out as 0 (the targets' solvent); a network trained on
            finite cubes instead returns a small fixed pattern tied to the cube position (about 2 %
            of the noise level), which blending turns into a grid of faint blobs that is the same
            for every input. See docs/design.md, "Null-response correction".

    After :meth:`predict`, :attr:`timings` holds the seconds spent in the network and in cube
    extraction plus blending, and the cube counts.

    Example:
        >>> from deepemhancer_engine.model import UNet3D
        >>> pred = Predictor(UNet3D(filters=(2, 4, 8)), torch.device("cpu"), batch_size=2)
        >>> pred.predict(np.zeros((20, 30, 40), np.float32), TilingConfig(tile=16, stride=8)).shape
        (20, 30, 40)
    """

    def __init__(self, model: nn.Module, device: torch.device, batch_size: Union[int, str, None] = None, *,
                 amp: AmpOption = None, channels_last: Optional[bool] = None,
                 null_std: Optional[float] = None) -> None:
        self.batch_size = _check_batch(batch_size)
        if null_std is not None and not null_std > 0:
            raise InputError(f"null-response noise level must be positive, got {null_std!r}")
        self.null_std = null_std
        self._null: dict[tuple, npt.NDArray[np.float32]] = {}
        #: Where null responses that need not be measured are found and measured ones kept across runs
        #: (:class:`nullresponse.NullStore`: ``get(tile, precision, band)`` and ``put(...)``); None: measure.
        self.null_store = None
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
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def _autocast(self):
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

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def _forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = self._input(torch.from_numpy(batch).unsqueeze(1).to(self.device, non_blocking=True))
        with self._autocast():
            y = self.model(x)
        return y.float().squeeze(1).contiguous().cpu().numpy()

    @property
    def precision(self) -> str:
        """The dtype the network computes in: ``float32``, ``bfloat16`` or ``float16``."""
        return str(self.amp_dtype or torch.float32).replace("torch.", "")

    def measure_null(self, tile: int, band: Optional[tuple[float, float, float]] = None,
                     cubes: int = NULL_CUBES) -> npt.NDArray[np.float32]:
        """Mean ``(tile, tile, tile)`` output over ``cubes`` noise cubes of std ``null_std`` (seed NULL_SEED).

        The first :data:`NULL_CUBES` cubes are the same for any ``cubes``. Not cached; see
        :meth:`null_response`.
        """
        if self.null_std is None:
            raise InputError("the null response needs a noise level (null_std)")
        rng = np.random.default_rng(NULL_SEED)
        step = max(1, min(self.resolve_batch_size(tile), 8))
        total = np.zeros((tile, tile, tile), np.float64)
        with torch.inference_mode():
            for done in range(0, cubes, step):
                noise = _band_noise(rng, min(step, cubes - done), tile, band, self.null_std)
                total += self._forward(noise).sum(axis=0, dtype=np.float64)
        return (total / cubes).astype(np.float32)

    def null_response(self, tile: int, band: Optional[tuple[float, float, float]] = None
                      ) -> Optional[npt.NDArray[np.float32]]:
        """The ``(tile, tile, tile)`` mean output for pure-noise cubes (None without ``null_std``).

        ``band``: per axis ``(z, y, x)``, the share of the Nyquist frequency the noise reaches (a map
        resampled from coarser voxels holds nothing beyond ``voxel / input voxel``); None = white.
        Responses found in :attr:`null_store` (the pipeline's: shipped with the weights for white noise,
        a per-user cache for bands, :mod:`nullresponse`) are used as they are; others are measured once
        per cube size and band on :data:`NULL_CUBES` cubes with a fixed seed, in the precision and layout
        used for the maps, and handed to the store.
        """
        if self.null_std is None:
            return None
        band = None if band is None or min(band) >= 1 else tuple(round(float(b), 3) for b in band)
        key = (tile, band)
        if key not in self._null:
            known, where = self.null_store.get(tile, self.precision, band) if self.null_store else (None, "")
            if known is not None and known.shape == (tile,) * 3:
                self._null[key] = np.asarray(known, np.float32)
                log.info("Null response of the network for %d^3 cubes%s in %s: %s", tile,
                         f" (band {band})" if band else "", self.precision, where)
            else:
                t0 = time.perf_counter()
                self._null[key] = null = self.measure_null(tile, band)
                log.info("Null response of the network measured on %d noise cubes of %d^3%s in %.1f s (rms %.3g)",
                         NULL_CUBES, tile, f" (band {band})" if band else "", time.perf_counter() - t0,
                         float(np.sqrt(np.mean(null.astype(np.float64) ** 2))))
                if self.null_store:
                    self.null_store.put(tile, self.precision, band, null)
        return self._null[key]

    def resolve_batch_size(self, tile: int) -> int:
        """The batch size a prediction with cubes of ``tile`` will use (measures the GPU when 'auto')."""
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
            with torch.inference_mode(), self._autocast():
                self.model(self._input(torch.zeros((probe, 1, tile, tile, tile), device=dev)))
        finally:
            torch.backends.cudnn.benchmark = autotune
        per_cube = (torch.cuda.max_memory_allocated(dev) - base) / probe
        n = batch_from_memory(free, per_cube)
        log.info("GPU batch size %d (%.0f MB per cube, %.1f GB free)", n, per_cube / 2**20, free / 2**30)
        return n

    def predict(
        self,
        array: npt.NDArray[np.float32],
        tiling: TilingConfig,
        progress: ProgressFn | None = None,
        *,
        mask: npt.ArrayLike | None = None,
        null_band: Optional[tuple[float, float, float]] = None,
    ) -> npt.NDArray[np.float32]:
        """Enhance a (Z, Y, X) map cube by cube; returns float32 of the input shape.

        Args:
            array: normalised (Z, Y, X) map at the network's voxel size.
            tiling: cube size, stride and blend mode.
            progress: called as ``progress(done_cubes, total_cubes)`` after each batch.
            mask: optional (Z, Y, X) mask (0..1) on the same grid. Cubes holding only voxels with mask
                values <= :data:`tiling.MASK_THRESHOLD` are not run: their output is the solvent value 0,
                and the result inside the mask is exactly the one without skipping.
            null_band: the band of the noise the null response is measured with (:meth:`null_response`).

        Raises:
            InputError: not a 3-D array, a mask of another shape, or a cube size the network cannot take.
            DeviceError: the GPU ran out of memory.
        """
        array = np.asarray(array)
        if array.ndim != 3:
            raise InputError(f"expected a 3-D map, got an array of shape {array.shape}")
        multiple = int(getattr(self.model, "size_multiple", 1))
        if tiling.tile % multiple:
            raise InputError(f"cube size {tiling.tile} must be divisible by {multiple} for this network")
        # Cube starts on multiples of the network's downsampling factor (the network is shift-equivariant
        # only for such shifts), and of 16 for the fcc lattice and strides of 16, 32, ... (the original's grid).
        align = cube_alignment(tiling, multiple)
        padded, unpad = pad_to_tile(np.ascontiguousarray(array, dtype=np.float32), tiling.tile,
                                    noise_std=self.null_std, align=align)
        grid = TileGrid.from_shape(padded.shape, tiling.tile, tiling.stride, align, tiling.cube_lattice)
        merger = TileMerger(grid, tiling.blend)
        starts = None
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != array.shape:
                raise InputError(f"mask shape {mask.shape} differs from map shape {array.shape}")
            starts, skipped = split_by_mask(grid, pad_to_tile(np.asarray(mask, np.float32), tiling.tile,
                                                               align=align)[0])
            merger.skip(skipped)
        total = grid.n_tiles - merger.n_skipped
        t0 = time.perf_counter()
        try:
            batch_size = self.resolve_batch_size(grid.tile)
            log.info(
                "Predicting %d cubes of %d^3 (%s grid, %s lattice, stride %d, %s blending%s) on %s, batch %d%s%s",
                total, grid.tile, "x".join(str(len(s)) for s in grid.starts), grid.lattice, grid.stride, tiling.blend,
                f", {merger.n_skipped} solvent cubes skipped" if merger.n_skipped else "", self.device,
                batch_size, f", {self.amp_dtype} autocast".replace("torch.", "") if self.amp_dtype else "",
                ", channels-last" if self.channels_last else "",
            )
            with torch.inference_mode():
                null = self.null_response(grid.tile, null_band) if total else None
                t_null = time.perf_counter() - t0
                run = self._run_cuda if self.device.type == "cuda" else self._run_cpu
                net_s, blend_s = run(padded, grid, starts, batch_size, merger, progress, total, null)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise DeviceError(
                f"the GPU ran out of memory with batch size {self.batch_size or 'auto'}; "
                "lower the batch size (-b) or use --device cpu"
            ) from exc
        t1 = time.perf_counter()
        result = merger.result()[unpad]
        result = np.ascontiguousarray(result, dtype=np.float32)
        wall = time.perf_counter() - t0
        self.timings = {"network": net_s + t_null, "blend": blend_s + time.perf_counter() - t1, "predict": wall,
                        "cubes": float(total), "skipped": float(merger.n_skipped)}
        log.info("Predicted %d cubes in %.1f s (%.2f cubes/s; network %.1f s, blending %.1f s)",
                 total, wall, total / max(wall, 1e-9), net_s, self.timings["blend"])
        return result

    def _run_cpu(self, padded, grid, starts, batch_size, merger, progress, total, null) -> tuple[float, float]:
        net_s = blend_s = 0.0
        done = 0
        t = time.perf_counter()
        for batch, chunk in iter_batches(padded, grid, batch_size, starts=starts):
            t1 = time.perf_counter()
            out = self._forward(batch)
            if null is not None:
                out -= null
            t2 = time.perf_counter()
            merger.add(out, chunk)
            t3 = time.perf_counter()
            net_s += t2 - t1
            blend_s += (t1 - t) + (t3 - t2)
            t = t3
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        return net_s, blend_s

    def _run_cuda(self, padded, grid, starts, batch_size, merger, progress, total, null) -> tuple[float, float]:
        """GPU loop with overlap: while the GPU runs batch k, the CPU cuts batch k+1 and blends batch k-1.

        Cubes travel through two pinned host buffers each way (non-blocking copies on the current
        stream); the blending weights are applied on the GPU, so the CPU only adds. Every forward pass
        has the full batch shape (a short last batch is run with the rest of its buffer, whose outputs
        are dropped): cuDNN autotunes once per input shape, which costs more than the few extra cubes.
        """
        dev, tile = self.device, grid.tile
        shape = (batch_size, 1, tile, tile, tile)
        ins = [torch.zeros(shape, dtype=torch.float32).pin_memory() for _ in range(2)]
        outs = [torch.empty(shape, dtype=torch.float32).pin_memory() for _ in range(2)]
        done, blend_s, pending = 0, 0.0, None
        t0 = time.perf_counter()
        with torch.cuda.device(dev):
            stream = torch.cuda.current_stream(dev)
            weights = torch.from_numpy(merger.weights).to(dev)
            null_t = torch.from_numpy(null).to(dev) if null is not None else None
            for k, (batch, chunk) in enumerate(iter_batches(padded, grid, batch_size, starts=starts)):
                n = len(chunk)
                host_out = outs[k % 2][:n]
                ins[k % 2][:n].copy_(torch.from_numpy(batch).unsqueeze(1))
                x = self._input(ins[k % 2].to(dev, non_blocking=True))  # the whole buffer: one shape
                with self._autocast():
                    y = self.model(x)[:n]
                y = y.float()
                if null_t is not None:
                    y = y.sub_(null_t)
                host_out.copy_(y.mul_(weights), non_blocking=True)
                event = torch.cuda.Event()
                event.record(stream)
                if pending is not None:
                    blend_s += self._finish(pending, merger)
                    done += len(pending[1])
                    if progress is not None:
                        progress(done, total)
                pending = (host_out, chunk, event)
            if pending is not None:
                blend_s += self._finish(pending, merger)
                done += len(pending[1])
                if progress is not None:
                    progress(done, total)
        return time.perf_counter() - t0 - blend_s, blend_s

    @staticmethod
    def _finish(pending, merger: TileMerger) -> float:
        host_out, chunk, event = pending
        event.synchronize()
        t = time.perf_counter()
        merger.add(host_out.numpy(), chunk, weighted=True)
        return time.perf_counter() - t
