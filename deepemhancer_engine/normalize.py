"""Input normalisation: bring the solvent noise to mean 0 and std 0.1, as DeepEMhancer expects.

The original estimates the noise in a radial shell beyond a fraction of the box, which fails for
hollow (virus capsid) and long (helical, filament) specimens. :func:`estimate_noise` instead finds
the solvent as every voxel that is far from any strong feature of a smoothed copy of the map, so
the noise inside a capsid and along a filament counts too, and takes robust statistics there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from .config import NormalizationConfig, NormMode
from .errors import InputError

log = logging.getLogger(__name__)

#: Gaussian smoothing (voxels) before thresholding; averages the noise down by ~20x.
SMOOTH_SIGMA = 2.0
#: Voxels whose smoothed value is more than this many robust stds from the solvent level are signal.
THRESHOLD_K = 4.0
#: Signal is grown by this many voxels (cube) to exclude its soft edges and ringing.
MARGIN = 4
#: Refinement rounds of the solvent level/threshold.
ROUNDS = 4
#: Fewer solvent voxels than this (or than 2 % of the box) triggers the fallback.
MIN_NOISE_VOXELS = 1000
#: Maps with every edge at least this long look for their solvent on a 2x2x2-binned copy (8x fewer
#: voxels to smooth and threshold; docs/design.md, "Solvent noise estimate"); the noise statistics
#: still come from the full map.
BIN_MIN_EDGE = 64
#: Robust statistics use at most this many (evenly strided) samples.
MAX_SAMPLES = 4_000_000
_MAD_TO_STD = 1.4826
#: Molecule-to-noise ratio: the 99th percentile of |x - solvent level| over the non-solvent voxels,
#: divided by the solvent noise std, on the 1 A working grid. Training inputs span about 8-48 (median
#: 20); unmasked deposited maps 16-72. A map above MASKED_RATIO has a masked or flattened solvent
#: whose std says nothing about the noise, so the noise is taken as the molecule's level divided by
#: the training median (docs/design.md, "Masked and flattened solvent").
TRAIN_RATIO_MEDIAN = 20.0
MASKED_RATIO = 200.0


@dataclass(frozen=True)
class NormInfo:
    """Noise statistics (input units) used to normalise a map."""

    mean: float
    std: float


def _sample(array: npt.NDArray[np.floating], where: npt.NDArray[np.bool_] | None = None) -> np.ndarray:
    """``array[where]`` from an even stride of at most MAX_SAMPLES voxels (no full-size copy)."""
    step = max(1, -(-array.size // MAX_SAMPLES))
    flat = array.ravel()[::step]
    return flat if where is None else flat[where.ravel()[::step]]


def _robust_stats(values: npt.NDArray[np.floating], what: str, *, flat_ok: bool = False) -> tuple[float, float]:
    """Median and 1.4826 * MAD of ``values`` (a MAD of 0 is an error unless ``flat_ok``)."""
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - np.float32(med))))
    if not mad > 0 and not flat_ok:
        raise InputError(
            f"cannot estimate the noise from {what}: more than half of its voxels have the same "
            f"value {med:g} (is the map masked?); use an unmasked map or give --noiseStats MEAN STD"
        )
    return med, _MAD_TO_STD * mad


def _solvent_peak(smooth: npt.NDArray[np.float32]) -> tuple[float, float]:
    """Level and width of the solvent peak: the histogram mode of the smoothed map.

    Smoothing makes the solvent a tall narrow peak even when the molecule fills half the box,
    where a median would land inside the molecule. The width comes from the peak's lower side.
    """
    sample = _sample(smooth)
    # The solvent is the lowest-density peak: search below the median (+ a little, in case the
    # solvent is most of the box and its peak sits just under the median).
    lo, med, top = (float(v) for v in np.percentile(sample, [0.5, 50.0, 99.5]))
    hi = min(top, med + 0.1 * (med - lo))
    for _ in range(3):  # zoom in on the mode
        if not hi > lo or np.any(np.diff(np.linspace(lo, hi, 257, dtype=sample.dtype)) <= 0):
            # narrower than 256 steps of the map's float type (a flat, masked solvent at an offset, with the
            # round-off of a filter): np.histogram refuses it, and the peak is as narrow as the data can tell
            break
        hist, edges = np.histogram(sample, bins=256, range=(lo, hi))
        peak = int(np.argmax(ndimage.uniform_filter1d(hist.astype(np.float64), 3)))
        width = edges[1] - edges[0]
        lo, hi = edges[peak] - 8 * width, edges[peak + 1] + 8 * width
    level = 0.5 * (float(lo) + float(hi))
    below = level - sample[sample < level]
    if below.size == 0:
        return level, 0.0
    return level, _MAD_TO_STD * float(np.median(below)) + (hi - lo) / 16


def _solvent_mask(smooth: npt.NDArray[np.float32], margin: int = MARGIN, min_count: int = MIN_NOISE_VOXELS
                  ) -> npt.NDArray[np.bool_]:
    """Voxels farther than ``margin`` from any feature beyond THRESHOLD_K robust stds."""
    solvent = np.ones(smooth.shape, dtype=bool)
    min_count = max(min_count, int(0.02 * smooth.size))
    for round_ in range(ROUNDS):
        if round_ == 0:
            level, spread = _solvent_peak(smooth)
        else:
            level, spread = _robust_stats(_sample(smooth, solvent), "the smoothed map", flat_ok=True)
        signal = np.abs(smooth - np.float32(level)) > np.float32(THRESHOLD_K * spread)
        signal = ndimage.maximum_filter(signal, size=2 * margin + 1, mode="wrap")
        new = ~signal
        if np.count_nonzero(new) < min_count:
            return new if round_ == 0 else solvent  # first round: let the caller fall back
        if np.array_equal(new, solvent):
            return solvent
        solvent = new
    return solvent


def _binned(data: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Means of 2x2x2 blocks (a trailing odd plane is left out)."""
    z, y, x = (s // 2 * 2 for s in data.shape)
    out = np.zeros((z // 2, y // 2, x // 2), np.float32)
    for i in (0, 1):
        for j in (0, 1):
            for k in (0, 1):
                out += data[i:z:2, j:y:2, k:x:2]
    out *= np.float32(0.125)
    return out


def _unbinned(mask: npt.NDArray[np.bool_], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """A mask of 2x2x2 blocks back on the full grid (an odd trailing plane copies its neighbour)."""
    full = mask.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    pad = [(0, s - f) for s, f in zip(shape, full.shape)]
    return np.pad(full, pad, mode="edge") if any(p for _, p in pad) else full


def solvent_voxels(data: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """The voxels of a (Z, Y, X) map far from any strong feature of its smoothed copy (the solvent)."""
    if data.ndim == 3 and min(data.shape) >= BIN_MIN_EDGE:
        # Find the solvent on 2x binned voxels (smoothing, threshold and margin in half the voxels).
        smooth = ndimage.gaussian_filter(_binned(data), SMOOTH_SIGMA / 2, mode="wrap", output=np.float32)
        return _unbinned(_solvent_mask(smooth, MARGIN // 2, -(-MIN_NOISE_VOXELS // 8)), data.shape)
    smooth = ndimage.gaussian_filter(data, SMOOTH_SIGMA, mode="wrap", output=np.float32)
    return _solvent_mask(smooth)


def estimate_noise(array: npt.ArrayLike, *, masked_rule: bool = True) -> tuple[float, float]:
    """Estimate the solvent noise (mean, std) of a (Z, Y, X) map, in the map's units.

    ``masked_rule`` False: the solvent's own statistics even when it is flat (std 0 possible), for maps that
    are not network inputs (an enhanced map's solvent is flat by design).

    Works for compact particles, hollow shells and filaments that span the box: no assumption
    on where the solvent is. Falls back to robust statistics of the whole map (with a warning)
    when less than 2 % of the box is solvent.

    Raises
    ------
    InputError
        The map is constant, so no noise level can be estimated. A masked or flattened solvent is not
        an error: the noise is then derived from the molecule's density (a warning says so).
    """
    data = np.asarray(array, dtype=np.float32)
    solvent = solvent_voxels(data)
    n = int(np.count_nonzero(solvent))
    if n < max(MIN_NOISE_VOXELS, int(0.02 * data.size)):
        log.warning(
            "only %d solvent voxels found (%.1f%% of the box); using robust statistics of the "
            "whole map as noise estimate - consider --noiseStats MEAN STD or a mask",
            n, 100.0 * n / data.size,
        )
        mean, std = _robust_stats(_sample(data), "the map", flat_ok=True)
        molecule = None
    else:
        mean, std = _robust_stats(_sample(data, solvent), "the solvent", flat_ok=True)
        log.debug("noise mean %.4g, std %.4g from %d solvent voxels (%.0f%% of the box)",
                  mean, std, n, 100.0 * n / data.size)
        molecule = ~solvent
    return (mean, std) if not masked_rule else (mean, _unmasked_std(data, molecule, mean, std))


def _unmasked_std(data: npt.NDArray[np.float32], molecule: npt.NDArray[np.bool_] | None, mean: float,
                  std: float) -> float:
    """``std``, or the molecule's level / TRAIN_RATIO_MEDIAN when the solvent is masked or flattened."""
    deviation = np.abs(_sample(data, molecule) - np.float32(mean))
    level = float(np.percentile(deviation, 99)) if deviation.size else 0.0
    if std > 0 and std * MASKED_RATIO >= level:  # no molecule at all (pure noise) included
        return std
    if not level > 0:
        raise InputError("cannot estimate the noise: the map is constant (or nearly so); "
                         "give --noiseStats MEAN STD")
    masked = level / TRAIN_RATIO_MEDIAN
    log.warning("the solvent looks masked or flattened (std %.3g against a molecule level of %.3g; unmasked "
                "maps have 1/8-1/70 of it): taking the noise std as %.3g, as in a typical training map; "
                "give --noiseStats MEAN STD to set it", std, level, masked)
    return masked


def _mask_noise(data: npt.NDArray[np.float32], mask: npt.ArrayLike, name: str) -> tuple[float, float]:
    """Noise statistics of the voxels outside a [0, 1] mask (mask <= 0.5)."""
    m = np.asarray(mask)
    if m.shape != data.shape:
        raise InputError(f"{name} shape {tuple(m.shape)} differs from map shape {tuple(data.shape)}")
    lo, hi = float(np.min(m)), float(np.max(m))
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"{name}: mask values must be within [0, 1], found [{lo:g}, {hi:g}]")
    outside = m <= 0.5
    n = int(np.count_nonzero(outside))
    if n < MIN_NOISE_VOXELS:
        raise InputError(f"{name}: only {n} voxels lie outside the mask; too few to estimate the noise")
    mean, std = _robust_stats(_sample(data, outside), f"outside {name}")
    log.debug("noise mean %.4g, std %.4g from %d voxels outside %s", mean, std, n, name)
    return mean, std


def normalize(
    array: npt.ArrayLike, *, config: NormalizationConfig, mask: npt.ArrayLike | None = None, in_place: bool = False
) -> tuple[npt.NDArray[np.float32], NormInfo]:
    """Return ``(x - mean) / std * config.target_std`` as float32, and the noise statistics.

    AUTO uses :func:`estimate_noise`; STATS uses ``config.noise_mean``/``noise_std``; MASK uses the
    voxels outside ``mask`` (same shape as ``array``, values in [0, 1]). ``in_place``: overwrite ``array``
    when it is a float32 array (the caller's copy; saves a volume of memory).
    """
    data = np.asarray(array, dtype=np.float32)
    if config.mode is NormMode.STATS:
        mean, std = float(config.noise_mean), float(config.noise_std)  # type: ignore[arg-type]
    elif config.mode is NormMode.MASK:
        name = f"mask {config.mask}" if config.mask is not None else "mask"
        if mask is None:
            raise InputError(f"{name}: mask normalisation needs the mask array")
        mean, std = _mask_noise(data, mask, name)
    else:
        mean, std = estimate_noise(data)
    if in_place and data is array and data.flags.writeable:
        out = data
        out -= np.float32(mean)
    else:
        out = data - np.float32(mean)
    out *= np.float32(config.target_std / std)
    return out, NormInfo(mean=mean, std=std)


def denormalize(array: npt.ArrayLike, info: NormInfo, target_std: float, *, in_place: bool = False
                ) -> npt.NDArray[np.float32]:
    """Scale a normalised-domain map back to input units (``x * std / target_std``, no offset); ``in_place``:
    overwrite ``array`` when it is a float32 array."""
    data = np.asarray(array, dtype=np.float32)
    scale = np.float32(info.std / target_std)
    if in_place and data is array and data.flags.writeable:
        data *= scale
        return data
    return data * scale


#: Solvent-cube skipping (docs/design.md, "Solvent cube skipping"): the normalised map is averaged in
#: blocks of ENVELOPE_BIN^3 voxels; blocks beyond ENVELOPE_SEED robust stds of the solvent peak seed the
#: molecule, which grows through connected blocks beyond ENVELOPE_GROW stds (weak density joined to strong).
ENVELOPE_BIN = 4
ENVELOPE_SEED = 6.0
ENVELOPE_GROW = 3.0
#: The smallest block spread, as a share of the normalised noise std: a masked map's flat solvent has
#: none, and everything that is not flat then counts as molecule.
ENVELOPE_MIN_SPREAD = 0.01


def block_means(data: npt.NDArray[np.float32], size: int) -> npt.NDArray[np.float32]:
    """Means of ``size``^3 blocks (trailing partial blocks padded with their edge values)."""
    pad = [(0, -n % size) for n in data.shape]
    if any(p for _, p in pad):
        data = np.pad(data, pad, mode="edge")
    z, y, x = (n // size for n in data.shape)
    out = data.reshape(z, size, y, size, x, size).mean(axis=(1, 3, 5), dtype=np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def _block_ball(radius: int, size: int) -> npt.NDArray[np.bool_]:
    """The block offsets ``d`` whose blocks of ``size`` voxels hold a voxel within ``radius`` voxels of some
    voxel of block 0 (per axis the nearest voxels are ``size |d| - size + 1`` apart)."""
    reach = -(-radius // size) + 1
    d = np.arange(-reach, reach + 1)
    gap = np.maximum(size * np.abs(d) - size + 1, 0).astype(np.int64) ** 2
    return gap[:, None, None] + gap[None, :, None] + gap[None, None, :] <= radius * radius


def grow_blocks(blocks: npt.NDArray[np.bool_], margin: int) -> npt.NDArray[np.bool_]:
    """``blocks`` (of :data:`ENVELOPE_BIN`^3 voxels) and every block within ``margin`` voxels of them."""
    if margin > 0 and blocks.any():
        return ndimage.binary_dilation(blocks, structure=_block_ball(int(margin), ENVELOPE_BIN))
    return blocks


def molecule_blocks(norm: npt.ArrayLike, target_std: float, margin: int) -> npt.NDArray[np.bool_]:
    """Where a normalised map (solvent noise of std ``target_std``) holds molecule, on blocks of
    :data:`ENVELOPE_BIN`^3 voxels: the blocks of the molecule (see :data:`ENVELOPE_SEED`) and every block
    within ``margin`` voxels of them (rounded up to whole blocks). All False for pure noise."""
    blocks = block_means(np.asarray(norm, dtype=np.float32), ENVELOPE_BIN)
    level, spread = _solvent_peak(blocks)
    spread = max(spread, ENVELOPE_MIN_SPREAD * target_std)
    z = np.abs(blocks - np.float32(level)) / np.float32(spread)
    labels, _ = ndimage.label(z > ENVELOPE_GROW)
    seeds = np.unique(labels[z > ENVELOPE_SEED])
    molecule = np.isin(labels, seeds[seeds > 0])
    molecule = grow_blocks(molecule, margin)
    log.debug("molecule envelope: level %.3g, block spread %.3g, %d of %d blocks with the margin", level,
              spread, int(np.count_nonzero(molecule)), molecule.size)
    return molecule


#: The data-envelope of the resolution limit (docs/design.md, "Solvent speckle"): molecule blocks grown by
#: this many voxels, then a Gaussian soft edge of this sigma (voxels).
DATA_ENVELOPE_MARGIN = 0
DATA_ENVELOPE_SIGMA = 2.0


def molecule_envelope(norm: npt.ArrayLike, target_std: float, margin: int = DATA_ENVELOPE_MARGIN,
                      sigma: float = DATA_ENVELOPE_SIGMA) -> npt.NDArray[np.float32] | None:
    """A soft (0..1) voxel envelope of the molecule of a normalised map: :func:`molecule_blocks` grown by
    ``margin`` voxels, back on the voxel grid, smoothed by a Gaussian of ``sigma`` voxels. None when the map
    holds no molecule (pure noise)."""
    norm = np.asarray(norm, dtype=np.float32)
    blocks = molecule_blocks(norm, target_std, margin)
    if not blocks.any():
        return None
    full = blocks.repeat(ENVELOPE_BIN, 0).repeat(ENVELOPE_BIN, 1).repeat(ENVELOPE_BIN, 2)
    env = np.ascontiguousarray(full[tuple(slice(0, n) for n in norm.shape)], dtype=np.float32)
    if sigma > 0:
        env = ndimage.gaussian_filter(env, sigma, mode="nearest", output=np.float32)
    return env
