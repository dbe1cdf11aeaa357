"""Figures for ``deepemhancer evaluate``: FSC curves and central orthogonal slices.

matplotlib (the ``plots`` or ``train`` extra) is imported lazily with the non-interactive Agg
backend, so the engine imports without it and nothing ever opens a window.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import DeepEMhancerError

log = logging.getLogger(__name__)

#: Line colours per variant name prefix, so every figure uses the same colour for a variant.
_COLOURS = {
    "raw": "tab:gray", "average": "tab:gray", "input": "tab:gray",
    "sharpened": "tab:blue", "enhanced": "tab:red", "noise": "tab:purple",
}


def _pyplot():
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - depends on the environment
        raise DeepEMhancerError(
            "plots need matplotlib: pip install 'deepemhancer-engine[plots]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colour(label: str) -> str | None:
    for key, colour in _COLOURS.items():
        if label.lower().startswith(key):
            return colour
    return None


def plot_fsc(
    curves: Mapping[str, object],
    path: str | os.PathLike,
    *,
    title: str = "",
    styles: Mapping[str, str] | None = None,
    marks: Mapping[str, float] | None = None,
) -> str:
    """Plot FSC curves (``{label: metrics.FSCCurve}``) on one figure and save a PNG.

    The x axis is spatial frequency (1/A) with tick labels in A; horizontal lines mark 0.5 and
    0.143. ``styles`` maps a label to a matplotlib line style (default solid); ``marks`` adds
    labelled vertical dotted lines at resolutions in A (e.g. the half-map FSC-0.143).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    fmax = 0.0
    for label, curve in curves.items():
        freq, val = np.asarray(curve.freq), np.asarray(curve.fsc)  # type: ignore[attr-defined]
        ax.plot(freq[1:], val[1:], (styles or {}).get(label, "-"), color=_colour(label), lw=1.6, label=label)
        fmax = max(fmax, float(freq[-1]))
    for y, text in ((0.5, "0.5"), (0.143, "0.143")):
        ax.axhline(y, color="k", lw=0.8, ls="--", alpha=0.6)
        ax.text(fmax * 1.01, y, text, va="center", fontsize=8)
    for text, res in (marks or {}).items():
        if res and np.isfinite(res) and res > 0:
            ax.axvline(1.0 / res, color="k", lw=0.8, ls=":", alpha=0.7)
            ax.text(1.0 / res, 1.02, f"{text} {res:.2f} Å", rotation=0, fontsize=7, ha="center",
                    transform=ax.get_xaxis_transform())
    ax.set_xlim(0, fmax)
    ax.set_ylim(-0.1, 1.05)
    ticks = [t for t in ax.get_xticks() if 0 < t <= fmax + 1e-9]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{1.0 / t:.3g}" for t in ticks])
    ax.set_xlabel("resolution (Å)   [axis linear in spatial frequency 1/Å]")
    ax.set_ylabel("FSC")
    if title:
        ax.set_title(title, fontsize=10, pad=14 if marks else 6)
    ax.legend(fontsize=8, loc="upper right", framealpha=0.85)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    log.info("Wrote %s", path)
    return str(path)


def central_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The three central orthogonal sections of a ``[z, y, x]`` map: XY (at z/2), XZ, YZ."""
    nz, ny, nx = volume.shape
    return [volume[nz // 2], volume[:, ny // 2, :], volume[:, :, nx // 2]]


def plot_slices(
    volumes: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    title: str = "",
    voxel_size: Sequence[float] | None = None,
) -> str:
    """Central XY/XZ/YZ sections of each map side by side (one column per map) and save a PNG.

    Each map is shown on its own grey scale, clipped to its 0.5-99.5 percentiles, because the maps
    are in different units.
    """
    plt = _pyplot()
    names = list(volumes)
    fig, axes = plt.subplots(3, len(names), figsize=(2.6 * len(names), 7.4), dpi=100, squeeze=False)
    planes = ("XY (central z)", "XZ (central y)", "YZ (central x)")
    for j, name in enumerate(names):
        vol = np.asarray(volumes[name], dtype=np.float32)
        lo, hi = np.percentile(vol, [0.5, 99.5])
        for i, sec in enumerate(central_slices(vol)):
            ax = axes[i][j]
            ax.imshow(sec, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower",
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0:
                ax.set_ylabel(planes[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    log.info("Wrote %s", path)
    return str(path)


def plot_calibration(found, path: str | os.PathLike, *, title: str = "") -> str:
    """Per block of the molecule (``confidence.Calibration``): mean confidence against the block's CC with the
    model map, and the naive answer (the raw halves' block CC) beside it when there is one."""
    plt = _pyplot()
    panels = [("mean confidence", found.confidence, found.spearman)]
    if found.naive is not None:
        panels.append(("raw halves' CC (naive)", found.naive, found.naive_spearman))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), dpi=100, squeeze=False)
    for ax, (name, values, rho) in zip(axes[0], panels):
        ax.scatter(found.model_cc, values, s=6, alpha=0.5)
        ax.set_xlabel("block CC, enhanced vs model map")
        ax.set_ylabel(f"block {name}")
        ax.set_title(f"Spearman {rho:.3f}", fontsize=10)
    fig.suptitle(f"{title} confidence calibration ({len(found.model_cc)} blocks)".strip(), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    log.info("Wrote %s", path)
    return str(path)
