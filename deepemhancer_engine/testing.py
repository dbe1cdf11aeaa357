"""Helpers that create small, clearly labelled weights for tests and placeholders.

``make_tiny_weights`` builds a seeded, randomly initialised test-sized :class:`model.UNet3D` and saves it
with a full model card (so tests exercise the real checksum/card path). ``make_random_weights`` creates
the RANDOM-WEIGHTS placeholder models that stand in for the registry models until trained weights ship.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from .config import ModelName, parse_option
from .model import UNet3D
from .weights import REGISTRY, save_weights

#: Notes of every placeholder card; ``ModelCard.is_placeholder`` looks for "RANDOM WEIGHTS".
PLACEHOLDER_NOTE = "RANDOM WEIGHTS – placeholder until trained weights ship"


def _seeded_unet(filters: Sequence[int], seed: int) -> UNet3D:
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = UNet3D(filters=tuple(filters))
    finally:
        torch.random.set_rng_state(gen_state)
    return net.eval()


def make_tiny_weights(
    directory: str | os.PathLike[str],
    *,
    tile: int = 32,
    filters: Sequence[int] = (2, 4, 8),
    name: str = "tiny",
    seed: int = 0,
) -> Path:
    """Save a tiny random UNet3D as ``directory/NAME.pt`` + ``NAME.json``; return the ``.pt`` path.

    Example:
        >>> import tempfile
        >>> from deepemhancer_engine.weights import load_model
        >>> pt = make_tiny_weights(tempfile.mkdtemp())
        >>> net, card = load_model("tightTarget", pt)
        >>> card.tile
        32
    """
    net = _seeded_unet(filters, seed)
    fields = {
        "name": name,
        "tile": int(tile),
        "voxel_size": 1.0,
        "normalization": "noise",
        "target": "none (test network)",
        "training": {"data": "none", "seed": seed},
        "version": "test",
        "license": "Apache-2.0",
        "notes": "RANDOM WEIGHTS – tiny test network, not trained",
    }
    return save_weights(net, fields, Path(directory) / f"{name}.pt")


def make_random_weights(
    directory: str | os.PathLike[str],
    name: ModelName | str,
    filters: Sequence[int] = (32, 64, 128),
    *,
    note: str = PLACEHOLDER_NOTE,
    tile: int = 64,
    seed: int = 0,
) -> Path:
    """Save a RANDOM-WEIGHTS placeholder for a registry model (file stem from ``REGISTRY``).

    Args:
        directory: target folder (e.g. ``deepemhancer_engine/weights``).
        name: registry model name (``tightTarget``, ``wideTarget``, ``highRes``, ``maskNormalized``).
        filters: network width (paper: (32, 64, 128); compact: (16, 32, 64)).
        note: card notes; must keep the words "RANDOM WEIGHTS" so the engine warns when it is used.
    """
    model = parse_option(ModelName, name, "model")
    if "RANDOM WEIGHTS" not in note.upper():
        raise ValueError(f"placeholder notes must say 'RANDOM WEIGHTS', got {note!r}")
    net = _seeded_unet(filters, seed)
    fields = {
        "name": str(model),
        "tile": int(tile),
        "voxel_size": 1.0,
        "normalization": "mask" if model is ModelName.MASKED else "noise",
        "target": "none: untrained placeholder",
        "training": {"data": "none", "status": "untrained", "seed": seed},
        "version": "0-placeholder",
        "license": "Apache-2.0",
        "notes": note,
    }
    return save_weights(net, fields, Path(directory) / f"{REGISTRY[model]}.pt")  # type: ignore[index]
