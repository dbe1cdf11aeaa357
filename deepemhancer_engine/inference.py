"""Run a whole map through a cube network: pad, cut into cubes, run them in batches, blend.

:func:`predict_volume` pads the map to at least one cube (with noise at the normalised level when the
null-response correction is on), lays the cubes out on aligned starts (:func:`cube_alignment`,
:mod:`tiling`), skips cubes that hold only solvent under a mask, runs the rest through a
:class:`~runner.NetworkRunner` under ``torch.inference_mode``, removes the network's null response
(:mod:`nullresponse`), blends the overlaps and removes the padding.

Two loops run the cubes: on CPU one batch after the other (:data:`runner.CPU_BATCH_SIZE` cubes per
pass by default); on a GPU with pinned double-buffered host copies, so that cutting and blending on the
CPU overlap the network on the GPU, and the blending weights applied on the GPU. Precision, layout and
batch size belong to the runner (docs/design.md, "Inference speed settings").
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Iterator, Optional

import numpy as np
import numpy.typing as npt
import torch

from .config import BlendMode, Lattice, TilingConfig
from .errors import DeviceError, InputError
from .nullresponse import Band, Colour, NullCorrection, subtract
from .runner import NetworkRunner
from .tiling import TileGrid, TileMerger, iter_batches, pad_to_tile, split_by_envelope, split_by_mask

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]

#: Cube starts are multiples of this where the stride allows (twice the U-Net's downsampling factor):
#: the grid of the original's stride-16 cubes, so every cube of the default stride is one the original
#: also evaluates (docs/design.md, "Aligned cube starts").
GRID_ALIGN = 16
#: Solvent-cube skipping keeps a margin of this many voxels around the molecule's blocks
#: (:func:`normalize.molecule_blocks`), the cubes that carry its weight (docs/design.md, "Solvent cube skipping").
SKIP_MARGIN = 8


def cube_alignment(tiling: TilingConfig, multiple: int) -> int:
    """The alignment of cube starts of ``tiling`` for a network shift-equivariant for shifts by
    ``multiple`` voxels.

    :data:`GRID_ALIGN` for the fcc lattice or a stride that is a multiple of it (other strides keep
    evenly spaced starts on multiples of ``multiple``: rounding them to multiples of 16 would make the
    gaps between cubes alternate, docs/design.md "Aligned cube starts"), when it is a multiple of
    ``multiple`` (> 1), at most ``stride`` and leaves no gap between cubes (``stride + align <= tile``,
    see :func:`tiling.axis_starts`); else ``multiple`` under the same conditions; else 1.

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


def _lay_out(array: npt.ArrayLike, tiling: TilingConfig, runner: NetworkRunner, mask: npt.ArrayLike | None,
             noise_std: Optional[float], solvent_std: Optional[float]):
    """Check the inputs, pad the map and lay out the cubes: ``(padded, unpad, grid, merger, starts, why)``,
    ``starts`` the cubes to run (None: all), the merger already told of the skipped ones, ``why`` what
    the skipped ones lack (for the log)."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"expected a 3-D map, got an array of shape {array.shape}")
    multiple = runner.size_multiple
    if tiling.tile % multiple:
        raise InputError(f"cube size {tiling.tile} must be divisible by {multiple} for this network")
    # Cube starts on multiples of the network's downsampling factor (the network is shift-equivariant
    # only for such shifts), and of 16 for the fcc lattice and strides of 16, 32, ... (the original's grid).
    align = cube_alignment(tiling, multiple)
    padded, unpad = pad_to_tile(np.ascontiguousarray(array, dtype=np.float32), tiling.tile,
                                noise_std=noise_std, align=align)
    grid = TileGrid.from_shape(padded.shape, tiling.tile, tiling.stride, align, tiling.cube_lattice)
    merger = TileMerger(grid, tiling.blend)
    starts, why = None, ""
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != array.shape:
            raise InputError(f"mask shape {mask.shape} differs from map shape {array.shape}")
        starts, skipped = split_by_mask(grid, pad_to_tile(np.asarray(mask, np.float32), tiling.tile,
                                                           align=align)[0])
        merger.skip(skipped)
        why = "solvent under the mask"
    elif solvent_std is not None:
        starts, skipped = solvent_cubes(padded, solvent_std, grid, tiling.blend)
        merger.skip(skipped)
        why = f"no molecule within {SKIP_MARGIN} voxels, or only its margin's lesser share"
    return padded, unpad, grid, merger, starts, why


def solvent_cubes(padded: npt.NDArray[np.float32], solvent_std: float, grid: TileGrid,
                  blend: BlendMode | str) -> tuple[list, list]:
    """``(needed, skippable)`` cubes of a normalised map without a mask: the molecule's blocks
    (:func:`normalize.molecule_blocks`) keep every cube that touches them, the :data:`SKIP_MARGIN` around
    them only the cubes that carry their weight (:func:`tiling.split_by_envelope`)."""
    from .normalize import ENVELOPE_BIN, grow_blocks, molecule_blocks

    core = molecule_blocks(padded, solvent_std, 0)
    return split_by_envelope(grid, core, grow_blocks(core, SKIP_MARGIN), block=ENVELOPE_BIN, blend=blend)


def predict_volume(
    array: npt.NDArray[np.float32],
    tiling: TilingConfig,
    runner: NetworkRunner,
    *,
    null: NullCorrection | None = None,
    null_band: Band = None,
    null_colour: Colour = None,
    mask: npt.ArrayLike | None = None,
    solvent_std: Optional[float] = None,
    progress: ProgressFn | None = None,
) -> tuple[npt.NDArray[np.float32], dict[str, float]]:
    """Enhance a (Z, Y, X) map cube by cube: ``(float32 map of the input shape, timings)``: seconds in the
    ``network`` (null response included), ``blend`` (cutting, blending, layout), ``predict`` (all), ``layout``,
    ``null``, ``first_batch``; counts ``cubes`` (run), ``skipped``, ``batch`` (cubes per pass).

    Args:
        array: normalised (Z, Y, X) map at the network's voxel size.
        tiling: cube size, stride, blend mode and lattice.
        runner: runs the network (device, precision, batch size).
        null: when given, its response for the cube size and ``null_band`` is subtracted from every cube
            before blending, and short axes are padded with noise of its level.
        null_band: the band of the noise the null response is measured with (:meth:`NullCorrection.response`).
        null_colour: the radial shape of that noise's power (:func:`nullresponse.noise_colour`; None: flat).
        mask: optional (Z, Y, X) mask (0..1) on the same grid: cubes holding only mask values <=
            :data:`tiling.MASK_THRESHOLD` are not run (output 0; inside the mask exactly the unskipped result).
        solvent_std: without a mask, the normalised noise std: cubes with no molecule within :data:`SKIP_MARGIN`
            voxels, or only the margin's lesser share (:func:`solvent_cubes`), are not run; None: every cube runs.
        progress: called as ``progress(done_cubes, total_cubes)`` after each batch.

    Raises:
        InputError: not a 3-D array, a mask of another shape, a cube size the network cannot take.
        DeviceError: the GPU ran out of memory.

    Example:
        >>> from deepemhancer_engine.model import UNet3D
        >>> run = NetworkRunner(UNet3D(filters=(2, 4, 8)), torch.device("cpu"), batch_size=2)
        >>> predict_volume(np.zeros((20, 30, 40), np.float32), TilingConfig(tile=16, stride=8), run)[0].shape
        (20, 30, 40)
    """
    t0 = time.perf_counter()
    padded, unpad, grid, merger, starts, why = _lay_out(array, tiling, runner, mask, null and null.std, solvent_std)
    total, t_layout = grid.n_tiles - merger.n_skipped, time.perf_counter() - t0
    with _memory_errors(runner):
        batch_size = runner.resolve_batch_size(grid.tile)
        _log_layout(grid, tiling, runner, batch_size, total, merger.n_skipped, why)
        with torch.inference_mode():
            t_null = -time.perf_counter()
            response = null.response(grid.tile, null_band, null_colour) if null is not None and total else None
            t_null += time.perf_counter()
            run = _run_cuda if runner.device.type == "cuda" else _run_cpu
            net_s, blend_s, first_s = run(runner, padded, grid, starts, batch_size, merger, progress, total,
                                          response)
    t1 = time.perf_counter()
    result = np.ascontiguousarray(merger.result()[unpad], dtype=np.float32)
    wall = time.perf_counter() - t0
    timings = {"network": net_s + t_null, "blend": blend_s + time.perf_counter() - t1 + t_layout, "predict": wall,
               "cubes": total, "skipped": merger.n_skipped, "layout": t_layout, "null": t_null, "first_batch": first_s,
               "batch": batch_size}
    log.info("Predicted %d cubes in %.1f s (%.2f cubes/s; network %.1f s, blending %.1f s)",
             total, wall, total / max(wall, 1e-9), net_s, timings["blend"])
    return result, timings


def _log_layout(grid: TileGrid, tiling: TilingConfig, runner: NetworkRunner, batch_size: int, total: int,
                skipped: int, why: str) -> None:
    log.info(
        "Predicting %d cubes of %d^3 (%s grid, %s lattice, stride %d, %s blending%s) on %s, batch %d%s",
        total, grid.tile, "x".join(str(len(s)) for s in grid.starts), grid.lattice, grid.stride, tiling.blend,
        f"; {skipped} of {grid.n_tiles} cubes skipped ({why})" if why else "", runner.device, batch_size,
        runner.describe(),
    )


@contextlib.contextmanager
def _memory_errors(runner: NetworkRunner) -> Iterator[None]:
    """Turn the GPU running out of memory into a DeviceError that says what to change."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        raise DeviceError(
            f"the GPU ran out of memory with batch size {runner.batch_size or 'auto'}; "
            "lower the batch size (-b) or use --device cpu"
        ) from exc


def _run_cpu(runner: NetworkRunner, padded, grid: TileGrid, starts, batch_size: int, merger: TileMerger,
             progress: ProgressFn | None, total: int, null: Optional[np.ndarray]) -> tuple[float, float, float]:
    """CPU loop: cut a batch, run it, subtract the null response, blend; returns (network s, blend s, first
    batch's network s)."""
    net_s = blend_s = 0.0
    first_s = None
    done = 0
    t = time.perf_counter()
    for batch, chunk in iter_batches(padded, grid, batch_size, starts=starts):
        t1 = time.perf_counter()
        out = runner.forward(batch)
        if null is not None:
            subtract(out, null)
        t2 = time.perf_counter()
        first_s = t2 - t1 if first_s is None else first_s
        merger.add(out, chunk)
        t3 = time.perf_counter()
        net_s += t2 - t1
        blend_s += (t1 - t) + (t3 - t2)
        t = t3
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    return net_s, blend_s, first_s or 0.0


def _run_cuda(runner: NetworkRunner, padded, grid: TileGrid, starts, batch_size: int, merger: TileMerger,
              progress: ProgressFn | None, total: int, null: Optional[np.ndarray]) -> tuple[float, float, float]:
    """GPU loop with overlap: while the GPU runs batch k, the CPU cuts batch k+1 and blends batch k-1.

    Cubes travel through two pinned host buffers each way (non-blocking copies on the current
    stream); the null response is subtracted and the blending weights applied on the GPU, so the CPU
    only adds. Every forward pass has the full batch shape (a short last batch is run with the rest of
    its buffer, whose outputs are dropped): cuDNN autotunes once per input shape. Returns (network s, blend
    s, first batch's s including its autotuning).
    """
    dev, tile = runner.device, grid.tile
    shape = (batch_size, 1, tile, tile, tile)
    ins = [torch.zeros(shape, dtype=torch.float32).pin_memory() for _ in range(2)]
    outs = [torch.empty(shape, dtype=torch.float32).pin_memory() for _ in range(2)]
    done, blend_s, pending, first_s = 0, 0.0, None, 0.0
    t0 = time.perf_counter()
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev)
        weights = torch.from_numpy(merger.weights).to(dev)
        null_t = torch.from_numpy(null).to(dev) if null is not None else None
        for k, (batch, chunk) in enumerate(iter_batches(padded, grid, batch_size, starts=starts)):
            n = len(chunk)
            host_out = outs[k % 2][:n]
            ins[k % 2][:n].copy_(torch.from_numpy(batch).unsqueeze(1))
            y = runner.run(ins[k % 2].to(dev, non_blocking=True))[:n].float()  # the whole buffer: one shape
            if null_t is not None:
                y = subtract(y, null_t)
            host_out.copy_(y.mul_(weights), non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
            if pending is not None:
                blend_s += _finish(pending, merger)
                done += len(pending[1])
                if progress is not None:
                    progress(done, total)
            pending = (host_out, chunk, event)
            if k == 0:
                event.synchronize()
                first_s = time.perf_counter() - t0
        if pending is not None:
            blend_s += _finish(pending, merger)
            done += len(pending[1])
            if progress is not None:
                progress(done, total)
    return time.perf_counter() - t0 - blend_s, blend_s, first_s


def _finish(pending, merger: TileMerger) -> float:
    """Wait for a batch's copy to the host and add it (already weighted); returns the seconds of the add."""
    host_out, chunk, event = pending
    event.synchronize()
    t = time.perf_counter()
    merger.add(host_out.numpy(), chunk, weighted=True)
    return time.perf_counter() - t
