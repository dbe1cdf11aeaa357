"""What the network sees: the input filtered at the data's resolution before it is normalised.

Beyond the resolution ``d`` of the data (the half-map FSC-0.143, or ``--resolution``) a map holds mostly
noise. Fed to the network as it is, that noise sets the normalisation (the solvent noise std is mostly
noise beyond ``d`` when the noise rises with frequency) and dominates what the network sees, so the
molecule enters it weaker than in training. :func:`condition` low-passes the input at ``d`` (or weights it
by the half-map FSC first) so that the noise estimate and the network see only the band the data support
(docs/design.md, "Conditioning what the network sees"). The resolution limit
(:func:`postprocess.limit_resolution`) still puts the input's own data back beyond ``d``.

:func:`filtered_at` tells, for a single map without a resolution, whether it was already low-pass
filtered (its power collapses by orders of magnitude within a narrow band).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .config import ConditionMode
from .fourier import as_xyz, cosine_edge

log = logging.getLogger(__name__)

#: The conditioning low-pass keeps everything up to ``1 / d`` and falls as a raised cosine to 0 at
#: ``(1 + CONDITION_EDGE) / d``: the network's output is kept up to ``0.9 / d`` (postprocess.LIMIT_EDGE), so
#: the edge lies where the data come back anyway.
CONDITION_EDGE = 0.1
#: A single map counts as low-pass filtered when its shell power falls by at least this factor from one
#: shell to a shell :data:`FILTERED_WIDTH` of the Nyquist frequency further (a B-factor decay or a noise
#: floor never falls that steeply; a raised-cosine low-pass falls to round-off).
FILTERED_DROP = 1e3
FILTERED_WIDTH = 0.1


def condition(volume: npt.ArrayLike, voxel_size: float | Sequence[float], mode: ConditionMode | str,
              resolution: float | None, curve=None) -> npt.NDArray[np.float32]:
    """The map the noise estimate and the network see (float32, same shape): ``volume`` low-passed at
    ``resolution`` A (LOWPASS), FSC-weighted with ``curve`` (the half maps' :class:`metrics.FSCCurve`, on this
    grid) and then low-passed (FSCWEIGHT; without a curve: LOWPASS), or unchanged (NONE, or no resolution).
    """
    from .config import parse_option
    from .metrics import fsc_weight, lowpass

    mode = parse_option(ConditionMode, mode, "conditioning")
    volume = np.asarray(volume, dtype=np.float32)
    if mode is ConditionMode.NONE or resolution is None:
        return volume
    d = float(resolution)
    if mode is ConditionMode.FSCWEIGHT and curve is not None:
        volume = fsc_weight(volume, voxel_size, curve)
    # metrics.lowpass centres its raised cosine on the cut-off: centred at (1 + edge / 2) / d it is 1 up to 1 / d.
    return lowpass(volume, voxel_size, d / (1.0 + CONDITION_EDGE / 2.0), edge_width=CONDITION_EDGE / d)


def response(s: np.ndarray, resolution: float) -> np.ndarray:
    """The conditioning low-pass at ``resolution`` (units of ``1 / s``): what the null response's noise gets."""
    return cosine_edge(s, 1.0 / resolution, CONDITION_EDGE / resolution)


def filtered_at(volume: npt.ArrayLike, voxel_size: float | Sequence[float]) -> float | None:
    """The resolution (A) where a map's power collapses (a low-pass filter), or None when it does not.

    The shell power ``|F|^2`` is compared with the power :data:`FILTERED_WIDTH` of the Nyquist frequency
    further out; the first shell (beyond the lowest tenth of the band) whose power falls by
    :data:`FILTERED_DROP` or more marks the filter.
    """
    from .metrics import radial_amplitude

    freq, amp = radial_amplitude(np.asarray(volume, dtype=np.float32), as_xyz(voxel_size))
    power = np.asarray(amp, dtype=np.float64) ** 2
    n = len(power)
    step = max(1, round(FILTERED_WIDTH * n))
    floor = 1e-30 + 1e-12 * float(power.max())  # round-off: beyond it every shell is "empty"
    for k in range(max(1, n // 10), n - step):
        if power[k] > FILTERED_DROP * max(power[k + step], floor) and power[k] > floor:
            return float(1.0 / freq[k]) if freq[k] > 0 else None
    return None


def check_single_map(volume: npt.ArrayLike, voxel_size: float | Sequence[float]) -> float | None:
    """For a single map without a resolution: log whether it looks filtered (info) or a warning naming
    ``--resolution`` when it does not; returns :func:`filtered_at`."""
    found = filtered_at(volume, voxel_size)
    if found is not None and math.isfinite(found):
        log.info("The map looks low-pass filtered at about %.3g A: the network sees no noise beyond it", found)
    else:
        log.warning("the map is not low-pass filtered and no resolution was given: the network sees the noise "
                    "beyond the map's resolution and the output is not limited to it; give --resolution A "
                    "(e.g. the FSC-0.143 of its half maps) or the two half maps (-i HALF1 -i2 HALF2)")
    return found
