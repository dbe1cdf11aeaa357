"""Split a volume into overlapping cubes and merge per-cube predictions back (house style G3-G6).

One geometry object, :class:`TileGrid`, is computed once from the (padded) volume shape; the splitter
(:func:`iter_batches`) and the merger (:class:`TileMerger`) are both built from it.

Cube starts follow nnU-Net's rule: per axis ``n = ceil((L - T) / S) + 1`` starts spread evenly from
``0`` to ``L - T``, so every cube lies fully inside the volume, the border is covered exactly and the
distance between starts never exceeds the stride. Axes shorter than the cube are zero-padded first
(:func:`pad_to_tile`, with zeros or, for the network, noise), which returns the slices that undo the padding.

The grid runs every cube or, as a face-centred cubic lattice, half of them (:class:`TileGrid`'s
``lattice``). Overlaps are blended with a weight map (:func:`weight_map`): an analytic Gaussian (sigma = 0.3 tile,
floor 1e-3) or uniform weights (legacy DeepEMhancer averaging, but with weights starting at 0, not at
the original's 1). Accumulation is in float32 over one volume-sized sum; the weight sum is built slab by
slab at the end, so memory grows with the map (one volume), not with the number of cubes.

Example:
    >>> import numpy as np
    >>> vol = np.random.rand(37, 50, 64).astype(np.float32)
    >>> grid = TileGrid.from_shape(vol.shape, tile=32, stride=16)
    >>> merger = TileMerger(grid, BlendMode.GAUSSIAN)
    >>> for batch, starts in iter_batches(vol, grid, batch_size=4):
    ...     merger.add(batch, starts)
    >>> bool(np.allclose(merger.result(), vol, atol=1e-5))
    True
"""

from __future__ import annotations

import itertools
import logging
import math
import zlib
from dataclasses import dataclass
from typing import Iterator, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from .config import BlendMode, Lattice, parse_option

log = logging.getLogger(__name__)

Shape3 = Tuple[int, int, int]
Start3 = Tuple[int, int, int]

#: Smallest Gaussian weight, so that every voxel of a cube contributes (MONAI uses the same floor).
WEIGHT_FLOOR = 1e-3
#: Gaussian sigma as a fraction of the cube edge (nnU-Net and MONAI use 1/8). A broader window keeps the
#: fcc lattice's output closer to the original's uniform average but passes more of the network's fixed
#: cube-position pattern to pure-noise inputs; 0.3 keeps both within their limits (docs/design.md, "Cube
#: lattice", with the figures).
SIGMA_FRACTION = 0.3
#: Planes of the weight sum :meth:`TileMerger.result` builds at a time (a slab, not a second volume).
MERGE_SLAB = 32
#: Mask values at or below this count as solvent when deciding which cubes can be skipped.
MASK_THRESHOLD = 1e-3
#: Skipping by a molecule envelope (:func:`split_by_envelope`): the largest share of its blending weight
#: a voxel of the envelope's margin (not of the molecule) may lose to skipped cubes (docs/design.md,
#: "Solvent cube skipping").
MAX_MARGIN_WEIGHT_LOSS = 0.2


def axis_starts(length: int, tile: int, stride: int, align: int = 1) -> list[int]:
    """Return the cube starts along one axis.

    ``n = ceil((length - tile) / stride) + 1`` starts spread evenly from ``0`` to ``length - tile``
    (``i * (length - tile) / (n - 1)``): floored to integers, consecutive starts differ by at most
    ``stride``. With ``align`` > 1 each evenly spread position is rounded to the nearest multiple of
    ``align`` instead (halves up), so the count stays the one ``stride`` asks for and consecutive starts
    differ by less than ``stride + align`` (``length - tile`` must be a multiple of ``align``: pad with
    :func:`pad_to_tile` and the same ``align``).

    Args:
        length: axis length in voxels, at least ``tile`` (pad first with :func:`pad_to_tile`).
        tile: cube edge in voxels.
        stride: distance between consecutive starts the count is chosen for, ``1 <= stride``.
        align: starts are multiples of this (``align <= stride``).

    Raises:
        ValueError: bad arguments, an axis shorter than ``tile`` or not padded for ``align``, or starts
            that would leave voxels outside every cube (``stride + align`` too large for ``tile``).

    Example:
        >>> axis_starts(10, 5, 3)
        [0, 2, 5]
        >>> axis_starts(110, 64, 32)
        [0, 23, 46]
        >>> axis_starts(256, 64, 40, align=16)
        [0, 32, 80, 112, 160, 192]
    """
    if tile < 1 or stride < 1 or align < 1:
        raise ValueError(f"tile, stride and align must be positive, got {tile!r}, {stride!r}, {align!r}")
    if length < tile:
        raise ValueError(f"axis length {length} is shorter than the cube size {tile}; pad it first")
    if align > stride:
        raise ValueError(f"alignment {align} is larger than the stride {stride}")
    span = length - tile
    if span % align:
        raise ValueError(f"axis length {length} minus the cube size {tile} is not a multiple of {align}; pad it")
    n = math.ceil(span / stride) + 1
    if n == 1:
        return [0]
    if align == 1:
        return [i * span // (n - 1) for i in range(n)]
    units = span // align
    starts = [align * ((2 * i * units + n - 1) // (2 * (n - 1))) for i in range(n)]
    if any(b - a > tile for a, b in zip(starts, starts[1:])):
        raise ValueError(f"stride {stride} with starts on multiples of {align} leaves gaps between "
                         f"{tile}-voxel cubes; use a smaller stride or alignment")
    return starts


@dataclass(frozen=True)
class TileGrid:
    """Geometry of the cubes covering a volume.

    Attributes:
        shape: (Z, Y, X) shape of the volume the cubes cover (already padded to at least ``tile``).
        tile: cube edge in voxels.
        stride: distance between consecutive cube starts the grid was built for, in voxels.
        starts: per axis (Z, Y, X), the sorted cube starts.
        lattice: ``"cubic"``: every combination of the per-axis starts is a cube; ``"fcc"``: only those
            whose three indices add up to an even number, and the corner cubes (a face-centred cubic
            lattice: about half the cubes; needs consecutive starts at most ``tile / 2`` apart, so that
            every voxel away from the corners lies in two cubes per axis, one of either parity).
    """

    shape: Shape3
    tile: int
    stride: int
    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    lattice: str = "cubic"

    @classmethod
    def from_shape(cls, shape: Sequence[int], tile: int, stride: int, align: int = 1,
                   lattice: Lattice | str = Lattice.CUBIC) -> TileGrid:
        """Build the grid for a volume of ``shape`` (every axis at least ``tile``; starts multiples of
        ``align``, see :func:`axis_starts`; ``lattice`` as in the class doc).

        Raises:
            ValueError: a bad shape, or an fcc lattice whose starts lie more than ``tile / 2`` apart.
        """
        if len(shape) != 3:
            raise ValueError(f"expected a 3-D shape, got {tuple(shape)!r}")
        lattice = parse_option(Lattice, lattice, "cube lattice")
        shape3 = tuple(int(s) for s in shape)
        starts = tuple(tuple(axis_starts(n, int(tile), int(stride), int(align))) for n in shape3)
        if lattice is Lattice.FCC and any(2 * (b - a) > tile for s in starts for a, b in zip(s, s[1:])):
            raise ValueError(f"an fcc lattice needs cube starts at most {tile // 2} voxels apart, got {starts}")
        return cls(shape=shape3, tile=int(tile), stride=int(stride), starts=starts,  # type: ignore[arg-type]
                   lattice=str(lattice))

    @property
    def n_tiles(self) -> int:
        """Number of cubes the grid runs."""
        if self.lattice == Lattice.FCC.value:
            return sum(1 for _ in self.iter_starts())
        return math.prod(len(s) for s in self.starts)

    def iter_starts(self) -> Iterator[Start3]:
        """Yield the start ``(z, y, x)`` of every cube the grid runs, in C order."""
        if self.lattice != Lattice.FCC.value:
            return itertools.product(*self.starts)  # type: ignore[return-value]
        last = [len(s) - 1 for s in self.starts]
        return (
            (self.starts[0][i], self.starts[1][j], self.starts[2][k])
            for i, j, k in itertools.product(*(range(len(s)) for s in self.starts))
            if (i + j + k) % 2 == 0 or (i in (0, last[0]) and j in (0, last[1]) and k in (0, last[2]))
        )

    def slices(self, start: Start3) -> tuple[slice, slice, slice]:
        """Return the slices of the cube starting at ``start``."""
        return tuple(slice(s, s + self.tile) for s in start)  # type: ignore[return-value]


def pad_to_tile(
    array: npt.NDArray[np.float32], tile: int, *, noise_std: float | None = None, align: int = 1
) -> tuple[npt.NDArray[np.float32], tuple[slice, slice, slice]]:
    """Pad the axes shorter than ``tile`` up to ``tile``, centring the data; with ``align`` also pad
    every axis to a multiple of ``align`` (``tile`` must be one), for aligned cube starts.

    The padding is 0, the noise mean after normalisation, so it adds plain background; with
    ``noise_std`` it is Gaussian noise of that standard deviation instead (solvent as the network saw it
    in training: a noiseless margin is a feature the network answers the same way for every input).
    The noise is seeded from the array's bytes, so the result is reproducible. Padding is centred
    (the extra voxel of an odd difference goes at the end) so the molecule keeps context on both sides.
    Axes already at least ``tile`` long are left untouched, and an array that needs no padding is
    returned as is (no copy).

    Returns:
        ``(padded, unpad)`` where ``padded[unpad]`` is the original array.
    """
    if array.ndim != 3:
        raise ValueError(f"expected a 3-D array, got shape {array.shape}")
    if tile % align:
        raise ValueError(f"cube size {tile} is not a multiple of the alignment {align}")
    widths = []
    for n in array.shape:
        extra = max(0, tile - n, -(-n // align) * align - n)
        widths.append((extra // 2, extra - extra // 2))
    unpad = tuple(slice(before, before + n) for (before, _), n in zip(widths, array.shape))
    if not any(before or after for before, after in widths):
        return array, unpad  # type: ignore[return-value]
    if noise_std is None:
        return np.pad(array, widths, mode="constant", constant_values=0), unpad  # type: ignore[return-value]
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(array).view(np.uint8)))
    shape = tuple(n + before + after for n, (before, after) in zip(array.shape, widths))
    padded = rng.normal(0.0, noise_std, shape).astype(np.float32)
    padded[unpad] = array
    return padded, unpad  # type: ignore[return-value]


def weight_map(tile: int, blend: BlendMode | str) -> npt.NDArray[np.float32]:
    """Return the (tile, tile, tile) float32 blending weights of one cube.

    GAUSSIAN: outer product of three 1-D Gaussians centred on the cube with sigma = 0.3 tile,
    normalised to a maximum of 1 and clamped to at least 1e-3. CONSTANT: ones.
    """
    blend = parse_option(BlendMode, blend, "blend mode")
    if blend is BlendMode.CONSTANT:
        return np.ones((tile, tile, tile), dtype=np.float32)
    g = _axis_weights(tile, np.arange(tile, dtype=np.float64))
    w = g[:, None, None] * g[None, :, None] * g[None, None, :]
    w /= w.max()
    return np.maximum(w, WEIGHT_FLOOR).astype(np.float32)


def _axis_weights(tile: int, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The Gaussian blending profile of one cube axis at positions ``x`` (voxels from the cube's start)."""
    return np.exp(-0.5 * ((x - (tile - 1) / 2.0) / (tile * SIGMA_FRACTION)) ** 2)


def iter_batches(
    array: npt.NDArray[np.float32],
    grid: TileGrid,
    batch_size: int,
    *,
    starts: Sequence[Start3] | None = None,
) -> Iterator[tuple[npt.NDArray[np.float32], list[Start3]]]:
    """Yield ``(batch, starts)``: float32 ``[B, T, T, T]`` cubes copied out of ``array`` and their starts.

    ``starts`` restricts the cubes to a subset of the grid (default: every cube, in C order). Only one
    batch is in memory at a time; the last batch may be smaller than ``batch_size``.
    """
    if tuple(array.shape) != grid.shape:
        raise ValueError(f"array shape {array.shape} differs from the tile grid shape {grid.shape}")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size!r}")
    it = iter(starts) if starts is not None else grid.iter_starts()
    while True:
        chunk = [tuple(s) for s in itertools.islice(it, batch_size)]
        if not chunk:
            return
        batch = np.empty((len(chunk), grid.tile, grid.tile, grid.tile), dtype=np.float32)
        for i, start in enumerate(chunk):
            batch[i] = array[grid.slices(start)]  # type: ignore[arg-type]
        yield batch, chunk  # type: ignore[misc]


def split_by_mask(
    grid: TileGrid, mask: npt.ArrayLike, threshold: float = MASK_THRESHOLD, *, block: int = 1
) -> tuple[list[Start3], list[Start3]]:
    """Split the cubes of ``grid`` into ``(needed, skippable)`` by a mask of the grid's shape.

    A cube is skippable when every mask value inside it is at most ``threshold``: it holds only
    solvent outside the mask. Every voxel with a mask value above ``threshold`` lies only in needed
    cubes, so skipping the others leaves the blended result there exactly unchanged. ``block`` > 1: the
    mask is on blocks of ``block``^3 voxels (``ceil(n / block)`` per axis); a cube needs every block it
    touches.
    """
    m = np.asarray(mask)
    want = tuple(-(-n // block) for n in grid.shape)
    if tuple(m.shape) != want:
        raise ValueError(f"mask shape {m.shape} differs from the tile grid shape {want}")
    inside = m > threshold
    needed: list[Start3] = []
    skippable: list[Start3] = []
    for start in grid.iter_starts():
        sl = tuple(slice(s // block, -(-(s + grid.tile) // block)) for s in start)
        (needed if inside[sl].any() else skippable).append(start)
    return needed, skippable


def split_by_envelope(
    grid: TileGrid, core: npt.ArrayLike, envelope: npt.ArrayLike, *, block: int,
    blend: BlendMode | str = BlendMode.GAUSSIAN, max_loss: float = MAX_MARGIN_WEIGHT_LOSS,
) -> tuple[list[Start3], list[Start3]]:
    """Split the cubes of ``grid`` into ``(needed, skippable)`` by a molecule ``core`` inside an ``envelope``
    (boolean masks on blocks of ``block``^3 voxels, as :func:`split_by_mask` takes them).

    A cube touching a core block is needed, so the blended output on the core is exactly the output
    with every cube run; a cube touching no envelope block is skippable. A cube touching only the margin
    (envelope blocks outside the core) is skipped as long as no margin block loses more than
    ``max_loss`` of its blending weight to the skipped cubes (weights at the block centres; cubes with
    the smallest largest share are tried first): the margin's output then stays a blend of at least
    ``1 - max_loss`` of the cubes that cover it.
    """
    core_b, env_b = np.asarray(core, bool), np.asarray(envelope, bool) | np.asarray(core, bool)
    want = tuple(-(-n // block) for n in grid.shape)
    if core_b.shape != want or env_b.shape != want:
        raise ValueError(f"envelope shapes {core_b.shape}, {env_b.shape} differ from the tile grid's {want}")
    margin = env_b & ~core_b
    cubes = [(start, *_block_share(grid, start, block, blend)) for start in grid.iter_starts()]
    total = np.zeros(want, np.float64)
    for _, sl, w in cubes:
        total[sl] += w
    needed: list[Start3] = []
    skippable: list[Start3] = []
    candidates = []
    for start, sl, w in cubes:
        if core_b[sl].any():
            needed.append(start)
        elif not margin[sl].any():
            skippable.append(start)
        else:
            share = w / total[sl]
            candidates.append((float(share[margin[sl]].max()), start, sl, w))
    lost = np.zeros(want, np.float64)
    for _, start, sl, w in sorted(candidates, key=lambda c: c[0]):
        ring = margin[sl]
        if ((lost[sl][ring] + w[ring]) / total[sl][ring]).max() <= max_loss:
            lost[sl] += w
            skippable.append(start)
        else:
            needed.append(start)
    order = {start: k for k, start in enumerate(grid.iter_starts())}
    return sorted(needed, key=order.__getitem__), sorted(skippable, key=order.__getitem__)


def _block_share(grid: TileGrid, start: Start3, block: int, blend: BlendMode | str):
    """``(slices, weights)``: the blocks a cube touches and its blending weight at their centres."""
    blend = parse_option(BlendMode, blend, "blend mode")
    sl, axes = [], []
    for s in start:
        b = np.arange(s // block, -(-(s + grid.tile) // block))
        centre = np.clip(b * block + (block - 1) / 2.0, s, s + grid.tile - 1) - s
        sl.append(slice(int(b[0]), int(b[-1]) + 1))
        axes.append(np.ones(len(b)) if blend is BlendMode.CONSTANT else _axis_weights(grid.tile, centre))
    return tuple(sl), axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


class TileMerger:
    """Weighted average of overlapping cube predictions, accumulated in float32.

    Holds one volume-sized sum (starting at 0) and the starts of the cubes added. ``add`` adds
    ``w * prediction`` for each cube; ``skip`` marks cubes whose output is known to be ``fill`` (solvent)
    without adding them; ``result`` divides the sum in place by the weight sum of the added cubes, which it
    builds one slab of :data:`MERGE_SLAB` planes at a time: no second volume is ever allocated.
    """

    def __init__(self, grid: TileGrid, blend: BlendMode | str, *, fill: float = 0.0) -> None:
        self.grid = grid
        self.blend = parse_option(BlendMode, blend, "blend mode")
        self.fill = float(fill)
        self._weights = weight_map(grid.tile, self.blend)
        self._sum: npt.NDArray[np.float32] | None = np.zeros(grid.shape, dtype=np.float32)
        self._tmp = np.empty((grid.tile,) * 3, dtype=np.float32)
        self._result: npt.NDArray[np.float32] | None = None
        self._added: list[Start3] = []
        self.n_added = 0
        self.n_skipped = 0

    @property
    def weights(self) -> npt.NDArray[np.float32]:
        """The (tile, tile, tile) weight map of one cube."""
        return self._weights

    def add(self, batch: npt.ArrayLike, starts: Sequence[Start3], *, weighted: bool = False) -> None:
        """Add predictions ``batch`` (``[B, T, T, T]`` or ``[B, 1, T, T, T]``) of the cubes at ``starts``.

        ``weighted=True`` says the predictions are already multiplied by :attr:`weights` (done on the GPU).
        """
        if self._result is not None or self._sum is None:
            raise RuntimeError("tile merger already returned its result; build a new one")
        pred = np.asarray(batch, dtype=np.float32)
        t = self.grid.tile
        if pred.ndim == 5 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.shape != (len(starts), t, t, t):
            raise ValueError(
                f"prediction batch shape {pred.shape} does not match {len(starts)} cubes of {t}^3"
            )
        w, tmp = self._weights, self._tmp
        for p, start in zip(pred, starts):
            sl = self.grid.slices(tuple(start))  # type: ignore[arg-type]
            if weighted:
                self._sum[sl] += p
            else:
                np.multiply(w, p, out=tmp)
                self._sum[sl] += tmp
            self._added.append(tuple(int(v) for v in start))  # type: ignore[arg-type]
        self.n_added += len(starts)

    def skip(self, starts: Sequence[Start3]) -> None:
        """Mark cubes whose prediction is known to be ``fill``; they add nothing to the blend.

        Voxels covered only by skipped cubes get ``fill``; voxels also covered by added cubes get the
        blend of those, exactly as if the skipped cubes had never been part of the grid.
        """
        self.n_skipped += len(starts)

    def result(self) -> npt.NDArray[np.float32]:
        """Return the blended (Z, Y, X) float32 volume; every cube must have been added or skipped.

        The division happens in place in the sum, slab by slab along Z.
        """
        if self._result is not None:
            return self._result
        if self.n_added + self.n_skipped != self.grid.n_tiles:
            raise RuntimeError(
                f"tile merger got {self.n_added} of {self.grid.n_tiles} cubes; cannot blend an incomplete grid"
            )
        total = self._sum
        if total is None:
            raise RuntimeError("tile merger lost its accumulators")
        for z0 in range(0, self.grid.shape[0], MERGE_SLAB):
            part = total[z0:z0 + MERGE_SLAB]
            wsum = self.weight_sum(z0, part.shape[0])
            if self.n_skipped == 0:
                if not wsum.min() > 0:
                    raise RuntimeError("tile merger found voxels without weight; the grid does not cover the volume")
                np.divide(part, wsum, out=part)
            else:
                covered = wsum > 0
                np.divide(part, wsum, out=part, where=covered)
                part[~covered] = self.fill
        self._result = total
        return total

    def weight_sum(self, z0: int = 0, depth: int | None = None) -> npt.NDArray[np.float32]:
        """The weight sum of the added cubes over planes ``z0 .. z0 + depth`` (default: to the end; float32,
        summed in the order the cubes were added, as a volume-sized accumulator would)."""
        t = self.grid.tile
        depth = self.grid.shape[0] - z0 if depth is None else depth
        wsum = np.zeros((depth, *self.grid.shape[1:]), dtype=np.float32)
        for z, y, x in self._added:
            lo, hi = max(z, z0), min(z + t, z0 + depth)
            if lo < hi:
                wsum[lo - z0:hi - z0, y:y + t, x:x + t] += self._weights[lo - z:hi - z]
        return wsum
