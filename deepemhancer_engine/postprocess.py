"""Optional clean-up of the enhanced map: remove small disconnected blobs (``--cleaningStrengh``).

The map is thresholded at a level derived from its own density range, connected components are
labelled, and every component smaller than ``strength`` x the largest one is set to zero together
with a thin halo around it (its sub-threshold edge). The largest components are left untouched.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from .errors import InputError

log = logging.getLogger(__name__)

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
