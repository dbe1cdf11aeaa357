"""After the network: the resolution limit (default with half maps) and the optional clean-up.

:func:`limit_resolution` keeps the network's output only up to the resolution the data support and
puts the input's own Fourier components back beyond it, so independently enhanced half maps agree
no more beyond that resolution than the raw halves do. :func:`match_amplitudes` then gives each Fourier
shell of the output the strength it has in the classical map (default with a resolution limit).

:func:`clean_small_blobs` removes small disconnected blobs (``--cleaningStrengh``). The map is
thresholded at a level derived from its own density range, connected components are
labelled, and every component smaller than ``strength`` x the largest one is set to zero together
with a thin halo around it (its sub-threshold edge). The largest components are left untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.fft
from scipy import ndimage

from .errors import InputError
from .fourier import as_xyz, cosine_edge, frequency_planes
from .metrics import _all_shells, _shell_layout, _shell_planes

log = logging.getLogger(__name__)

#: Width of the resolution limit's raised-cosine edge, as a fraction of 1/resolution: the network's
#: output is kept fully up to (1 - edge) / d and not at all from 1 / d on.
LIMIT_EDGE = 0.1
#: Beyond 1 / d the data come back at the output's amplitude, fading (raised cosine over this fraction
#: of 1 / d) to :data:`DATA_FLOOR` of it: the data there are mostly noise, so they are kept (the FSC of
#: two outputs then equals that of the inputs) but damped, as a low-pass would (RELION) without
#: leaving nothing to compare.
DATA_FADE = 0.2
DATA_FLOOR = 0.3

#: Largest factor :func:`match_amplitudes` applies to a shell, relative to the ratio of the two maps' whole
#: power (a shell the network left nearly empty is not blown up to the reference's level; the maps' scales
#: do not matter).
MAX_SHELL_GAIN = 10.0

#: Threshold = background + this fraction of (high percentile - background).
THRESHOLD_FRACTION = 0.1
#: Percentile that stands for the strong density of the map.
HIGH_PERCENTILE = 99.9
#: Voxels within this distance of a removed blob are removed too (its faint edge).
HALO = 2


def cleaning_threshold(array: npt.NDArray[np.floating]) -> float:
    """Density level separating molecule from background: median + 10 % of (p99.9 - median)."""
    background, high = (float(v) for v in np.percentile(array, [50.0, HIGH_PERCENTILE]))
    return background + THRESHOLD_FRACTION * (high - background)


def clean_small_blobs(array: npt.ArrayLike, strength: float | None) -> npt.NDArray[np.float32]:
    """Zero connected components smaller than ``strength`` x the largest component.

    Parameters
    ----------
    array : (Z, Y, X) map.
    strength : in (0, 1]; ``None`` or <= 0 returns ``array`` unchanged.

    Returns
    -------
    A float32 copy with small blobs (and a ``HALO``-voxel rim around them) set to 0.
    """
    if strength is None or strength <= 0:
        return array  # type: ignore[return-value]
    if strength > 1:
        raise InputError(f"cleaning strength must be between 0 and 1, got {strength!r}")
    data = np.array(array, dtype=np.float32, order="C")
    threshold = cleaning_threshold(data)
    structure = ndimage.generate_binary_structure(3, 3)  # 26-connectivity
    labels, n_labels = ndimage.label(data > threshold, structure=structure)
    if n_labels <= 1:
        log.info("cleaning: %d component(s) above %.4g, nothing to remove", n_labels, threshold)
        return data
    sizes = np.bincount(labels.ravel(), minlength=n_labels + 1)
    sizes[0] = 0
    small = sizes < strength * sizes.max()
    small[0] = False
    remove = small[labels]
    keep = (labels > 0) & ~remove
    del labels
    remove = ndimage.maximum_filter(remove, size=2 * HALO + 1) & ~keep
    data[remove] = 0.0
    log.info(
        "cleaning: removed %d of %d components (%d voxels) smaller than %.3g x the largest (%d voxels)",
        int(np.count_nonzero(small)), n_labels, int(np.count_nonzero(remove)), strength, int(sizes.max()),
    )
    return data


def _check_limit(enhanced: np.ndarray, original: np.ndarray, resolution: float, edge: float, envelope) -> None:
    if not (resolution > 0 and math.isfinite(resolution)):
        raise InputError(f"resolution limit must be a positive number of A, got {resolution!r}")
    if not 0 < edge < 1:
        raise InputError(f"resolution-limit edge must be between 0 and 1, got {edge!r}")
    if enhanced.shape != original.shape:
        raise InputError(f"enhanced map {enhanced.shape} and input {original.shape} differ in shape")
    if envelope is not None and np.shape(envelope) != enhanced.shape:
        raise InputError(f"envelope {np.shape(envelope)} and map {enhanced.shape} differ in shape")


def _combine(parts: list, shape: tuple[int, ...], envelope: npt.ArrayLike | None) -> np.ndarray:
    """The map of ``f_enh + f_data`` (``parts`` = [f_enh, f_data], emptied: each transform is freed as soon
    as it is used, which sets the limit's peak memory), or with an envelope ``F^-1 f_enh + envelope F^-1 f_data``."""
    f_data = parts.pop()
    f_enh = parts.pop()
    if envelope is None:
        f_enh += f_data
        del f_data
        return scipy.fft.irfftn(f_enh, s=shape, workers=-1)
    out = scipy.fft.irfftn(f_enh, s=shape, workers=-1)
    del f_enh
    data = scipy.fft.irfftn(f_data, s=shape, workers=-1)
    del f_data
    data *= np.asarray(envelope, dtype=data.dtype)
    out += data
    return out


def limit_resolution(
    enhanced: npt.ArrayLike,
    original: npt.ArrayLike,
    voxel_size: Sequence[float],
    resolution: float,
    *,
    edge: float = LIMIT_EDGE,
    envelope: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.float32], float]:
    """Keep the network's output up to ``resolution`` A and the input's own data beyond it.

    ``out = F^-1[H F(enhanced) + (1 - H) c D F(original)]`` with ``H`` = 1 below ``(1 - edge) / d``, a
    raised cosine down to 0 at ``1 / d``; ``c`` the ratio of the rms Fourier amplitudes of the enhanced
    and original maps inside that edge (the input comes back at the output's level, without a step in
    the spectrum); ``D`` = 1 up to ``1 / d``, a raised cosine down to :data:`DATA_FLOOR` at
    ``(1 + DATA_FADE) / d`` and that floor beyond (the data beyond ``d`` are mostly noise: damped, not
    dropped). Beyond ``d`` the output is a fixed linear filter of the input, so the FSC between two
    outputs there equals the FSC between the two inputs: nothing is added that the data do not hold.

    ``envelope`` (0..1, the map's shape; :func:`normalize.molecule_envelope`): the data beyond ``d`` come
    back multiplied by it, i.e. only where there is molecule; the solvent keeps no speckle of the noise
    beyond ``d``. None: over the whole box.

    Returns the map (float32) and ``c``; ``enhanced`` is returned unchanged (``c`` NaN) when no
    frequency of the box lies beyond ``(1 - edge) / d``.
    """
    enhanced = np.asarray(enhanced, dtype=np.float32)
    original = np.asarray(original, dtype=np.float32)
    _check_limit(enhanced, original, resolution, edge, envelope)
    # |s| one Z plane of the transform at a time: no volume-sized frequency, filter or band arrays, so the
    # limit's peak memory is the two transforms (the --confidence run's peak at 384^3).
    def planes():
        return enumerate(frequency_planes(enhanced.shape, voxel_size, np.float32))

    f_cut, lo = 1.0 / resolution, (1 - edge) / resolution
    if lo >= max(float(s.max()) for _, s in planes()):
        return enhanced, float("nan")
    f_enh = scipy.fft.rfftn(enhanced, workers=-1)
    f_in = scipy.fft.rfftn(original, workers=-1)
    p_in = p_enh = 0.0
    for k, s in planes():
        band = (s > lo) & (s <= f_cut)
        p_in += float(np.sum(np.abs(f_in[k][band]) ** 2, dtype=np.float64))
        p_enh += float(np.sum(np.abs(f_enh[k][band]) ** 2, dtype=np.float64))
    c = math.sqrt(p_enh / p_in) if p_in > 0 else 0.0
    for k, s in planes():
        keep = cosine_edge(s, lo, edge * f_cut).astype(np.float32, copy=False)
        damp = DATA_FLOOR + (1.0 - DATA_FLOOR) * cosine_edge(s, f_cut, DATA_FADE * f_cut)
        f_enh[k] *= keep
        f_in[k] *= ((1.0 - keep) * np.float32(c) * damp).astype(np.float32, copy=False)
    parts = [f_enh, f_in]
    del f_enh, f_in
    out = _combine(parts, enhanced.shape, envelope)
    log.info("Resolution limit %.3g A: network output kept up to %.3g A, input data beyond (scaled by %.3g, "
             "damped to %g x by %.3g A%s)", resolution, resolution / (1 - edge), c, DATA_FLOOR,
             resolution / (1 + DATA_FADE), "" if envelope is None else ", inside the molecule's envelope")
    return np.ascontiguousarray(out, dtype=np.float32), c


def _shell_power(volume: np.ndarray, weight: np.ndarray | None, shape_vs: tuple) -> np.ndarray:
    """Summed ``|F|^2`` per shell (``metrics.fsc``'s one-voxel shells, the box corners beyond Nyquist in shells
    of their own) of ``(volume - its mean) * weight``: without the mean, an offset of the map (a user's map on
    any scale and offset; the output's solvent sits at 0) does not become, once multiplied by the envelope,
    low-resolution power shaped like the envelope."""
    centred = np.subtract(volume, np.float32(volume.mean(dtype=np.float64)), dtype=np.float32)
    if weight is not None:
        centred *= weight
    f = scipy.fft.rfftn(centred, workers=-1)
    del centred
    n = _all_shells(*shape_vs)
    power = np.zeros(n)
    for k, idx, _ in _shell_planes(*shape_vs, corners=True):
        power += np.bincount(idx.ravel(), weights=(np.abs(f[k]).astype(np.float64) ** 2).ravel(), minlength=n)
    return power


def apply_shell_gain(volume: npt.ArrayLike, gain: np.ndarray, voxel_size: float | Sequence[float]
                     ) -> npt.NDArray[np.float32]:
    """``volume`` with each shell of :func:`match_amplitudes` (``gain[i]`` for shell ``i``) multiplied by its
    gain."""
    volume = np.asarray(volume, dtype=np.float32)
    f = scipy.fft.rfftn(volume, workers=-1)
    for k, idx, _ in _shell_planes(volume.shape, as_xyz(voxel_size), corners=True):
        f[k] *= gain[idx]
    out = scipy.fft.irfftn(f, s=volume.shape, workers=-1)
    del f
    return np.ascontiguousarray(out, dtype=np.float32)


def match_amplitudes(
    enhanced: npt.ArrayLike,
    reference: npt.ArrayLike,
    voxel_size: float | Sequence[float],
    *,
    weight: npt.ArrayLike | None = None,
    resolution: float | None = None,
) -> tuple[npt.NDArray[np.float32], np.ndarray]:
    """Scale each Fourier shell of ``enhanced`` so that its power inside ``weight`` (0..1, e.g. the molecule's
    envelope; None: the whole box) equals that of ``reference``: ``out = F^-1[g(|s|) F(enhanced)]`` with
    ``g = sqrt(P_ref / P_enh)`` per one-voxel shell (at most :data:`MAX_SHELL_GAIN` times the ratio for the
    whole maps), each map's mean removed before it is weighted; the mean (shell 0) is left as it is.
    ``resolution`` (A): shells more than one shell beyond ``1 / resolution`` get nothing. Without it (the
    pipeline's choice), a reference low-passed there still has power in them once multiplied by ``weight``
    (the envelope spreads its low-pass edge), so what ``enhanced`` holds beyond comes back damped to that.

    The network decides where the density is; the data decide how strong each resolution shell is. A real,
    positive factor per FSC shell leaves the (unmasked) FSC between two such outputs unchanged in every shell
    where both keep power.

    Returns the map (float32) and the gain per shell.
    """
    enhanced = np.asarray(enhanced, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if reference.shape != enhanced.shape:
        raise InputError(f"reference {reference.shape} and map {enhanced.shape} differ in shape")
    w = None if weight is None else np.asarray(weight, dtype=np.float32)
    if w is not None and w.shape != enhanced.shape:
        raise InputError(f"weight {w.shape} and map {enhanced.shape} differ in shape")
    shape_vs = (enhanced.shape, as_xyz(voxel_size))
    p_ref = _shell_power(reference, w, shape_vs)
    p_enh = _shell_power(enhanced, w, shape_vs)
    n, width = len(p_ref), _shell_layout(*shape_vs)[1]
    kept = np.arange(n) * width <= (1.0 / resolution + width if resolution else np.inf)
    p_ref[~kept] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(p_enh > 0, np.sqrt(p_ref / np.where(p_enh > 0, p_enh, 1.0)), 0.0)
    overall = math.sqrt(p_ref[1:].sum() / p_enh[1:].sum()) if p_enh[1:].sum() > 0 else 1.0
    if overall == 0.0:
        log.warning("The classical map is empty (the half maps share no signal up to the limit): the output "
                    "keeps only its mean")
    gain = np.minimum(gain, MAX_SHELL_GAIN * overall).astype(np.float32)
    gain[0] = 1.0  # the mean stays the output's own (its solvent at 0)
    out = apply_shell_gain(enhanced, gain, voxel_size)
    inside = gain[1:][kept[1:]]
    if inside.size:
        log.info("Shell amplitudes matched to the classical map (gain %.3g-%.3g up to the limit)",
                 float(inside.min()), float(inside.max()))
    return out, gain
