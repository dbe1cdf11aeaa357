"""Model weights: registry, model cards, SHA-256 verification, safe loading and atomic saving (G10, G11).

Each model is two files with the same stem in one folder: ``NAME.pt`` (a plain PyTorch state dict) and
``NAME.json`` (its :class:`ModelCard`: architecture + arguments, cube size, training voxel size,
normalisation, training description, SHA-256 of the ``.pt``). The network is rebuilt from the card
(:func:`model.build_model`), the file's SHA-256 is checked against the card *before* it is unpickled,
and it is read with ``torch.load(..., weights_only=True)``.

Resolution: an explicit path (``--weights``) wins; otherwise :data:`REGISTRY` names the stem inside
:func:`weights_dir`, which is ``$DEEPEMHANCER_WEIGHTS_DIR`` when set (the only environment variable the
engine reads for weights) or the package's ``deepemhancer_engine/weights/`` folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .config import ModelName, parse_option
from .errors import WeightsError
from .io import atomic_write
from .model import ARCHITECTURES, build_model, count_parameters

log = logging.getLogger(__name__)

#: Environment variable naming the folder with the weights (read only in :func:`weights_dir`).
WEIGHTS_ENV = "DEEPEMHANCER_WEIGHTS_DIR"
#: Named model -> file stem inside :func:`weights_dir` (``STEM.pt`` + ``STEM.json``).
REGISTRY: dict[ModelName, str] = {
    ModelName.TIGHT: "tightTarget",
    ModelName.WIDE: "wideTarget",
    ModelName.HIGHRES: "highRes",
    ModelName.MASKED: "maskNormalized",
}
NORMALIZATIONS = ("noise", "mask")
_REQUIRED = ("name", "arch", "kwargs", "tile", "voxel_size", "normalization")


@dataclass(frozen=True)
class ModelCard:
    """What a set of weights is and how it must be used (the JSON beside the ``.pt``).

    Attributes:
        name: model name (e.g. ``tightTarget``).
        arch: architecture name, a key of :data:`model.ARCHITECTURES`.
        kwargs: constructor arguments of the architecture.
        tile: cube edge the network was trained on (voxels).
        voxel_size: training voxel size (A/voxel).
        normalization: ``"noise"`` (noise mean 0 / std 0.1) or ``"mask"`` (statistics inside a mask).
        target: description of the training targets.
        training: description of the training run (data, epochs, loss, code version, ...).
        version: version of these weights.
        sha256: SHA-256 of the ``.pt`` file (hex).
        license: licence of the weights.
        notes: free text (e.g. the RANDOM WEIGHTS warning of placeholders).
        parameters: number of trainable parameters.
    """

    name: str
    arch: str
    kwargs: dict[str, Any]
    tile: int
    voxel_size: float
    normalization: str
    target: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    sha256: str = ""
    license: str = ""
    notes: str = ""
    parameters: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model card") -> ModelCard:
        """Validate ``data`` and build a card; ``source`` names the file in error messages."""
        if not isinstance(data, Mapping):
            raise WeightsError(f"{source}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise WeightsError(f"{source}: missing field(s) {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            log.debug("%s: ignoring unknown field(s) %s", source, ", ".join(extra))
        values = {k: data[k] for k in known if k in data}
        try:
            card = cls(**values)
            object.__setattr__(card, "tile", int(card.tile))
            object.__setattr__(card, "voxel_size", float(card.voxel_size))
            object.__setattr__(card, "parameters", int(card.parameters))
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"{source}: invalid field value ({exc})") from exc
        if not isinstance(card.kwargs, dict) or not isinstance(card.training, dict):
            raise WeightsError(f"{source}: 'kwargs' and 'training' must be JSON objects")
        if card.normalization not in NORMALIZATIONS:
            raise WeightsError(
                f"{source}: normalization must be one of {', '.join(NORMALIZATIONS)}, "
                f"got {card.normalization!r}"
            )
        if card.tile < 8 or card.voxel_size <= 0:
            raise WeightsError(f"{source}: implausible tile {card.tile} or voxel size {card.voxel_size}")
        return card

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read a card from a JSON file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise WeightsError(f"model card {path} not found") from None
        except OSError as exc:
            raise WeightsError(f"cannot read model card {path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WeightsError(f"model card {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=f"model card {path}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dictionary."""
        return dataclasses.asdict(self)

    @property
    def is_placeholder(self) -> bool:
        """True for the clearly labelled random-weights placeholders."""
        return "RANDOM WEIGHTS" in self.notes.upper()


def weights_dir() -> Path:
    """Folder of the registry weights: ``$DEEPEMHANCER_WEIGHTS_DIR`` or the package's ``weights/``."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent / "weights"


def card_path(pt_path: str | os.PathLike[str]) -> Path:
    """Model card beside ``pt_path``: same stem, ``.json``."""
    return Path(pt_path).with_suffix(".json")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _available(directory: Path) -> list[str]:
    return [
        str(m) for m, stem in REGISTRY.items()
        if (directory / f"{stem}.pt").is_file() and (directory / f"{stem}.json").is_file()
    ]


def resolve_weights(
    model: ModelName | str, path: str | os.PathLike[str] | None = None
) -> tuple[Path, ModelCard]:
    """Find the ``.pt`` file and read its card, for a named model or an explicit path.

    Args:
        model: the named model (used when ``path`` is None, or ``path`` is a folder).
        path: explicit ``.pt`` file (card beside it) or folder holding the registry file names.

    Raises:
        WeightsError: missing weights or card, or an unreadable card.
    """
    model = parse_option(ModelName, model, "model")
    stem = REGISTRY[model]  # type: ignore[index]
    if path is None or Path(path).is_dir():
        directory = weights_dir() if path is None else Path(path)
        pt = directory / f"{stem}.pt"
        if not pt.is_file():
            avail = _available(directory)
            raise WeightsError(
                f"no weights for model {model} in {directory} (expected {pt.name} and {stem}.json); "
                f"available there: {', '.join(avail) if avail else 'none'}; "
                f"set {WEIGHTS_ENV} to the weights folder or pass --weights PATH"
            )
    else:
        pt = Path(path)
        if not pt.is_file():
            raise WeightsError(f"weights file {pt} not found")
    cpath = card_path(pt)
    if not cpath.is_file():
        raise WeightsError(f"model card {cpath} not found (every weights file needs its .json card beside it)")
    return pt, ModelCard.from_json(cpath)


def _load_state_dict(pt: Path, card: ModelCard) -> dict[str, torch.Tensor]:
    if not card.sha256:
        raise WeightsError(f"model card {card_path(pt)} has no sha256; refusing to load {pt}")
    actual = sha256_file(pt)
    if actual.lower() != card.sha256.lower():
        raise WeightsError(
            f"checksum mismatch for {pt}: SHA-256 {actual[:16]}... but its card says {card.sha256[:16]}... "
            f"(corrupt or replaced file)"
        )
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; all mean "not a state dict"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc):  # torch suggests weights_only=False: never for untrusted files
            first = "the file holds objects other than tensors (refused: only plain state dicts are loaded)"
        raise WeightsError(f"cannot read {pt} as PyTorch weights: {first}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{pt} does not hold a state dict (a mapping of tensor names to tensors)")
    return dict(state)


def _fit_problems(net: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """One-line summary of how ``state`` differs from ``net``'s own state dict ('' if it fits)."""
    own = net.state_dict()

    def few(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")

    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own if k in state and state[k].shape != own[k].shape
    ]
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {few(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} size mismatch(es) (file vs network): {few(shapes)}")
    return "; ".join(problems)


def load_model(model: ModelName | str, path: str | os.PathLike[str] | None = None) -> tuple[nn.Module, ModelCard]:
    """Resolve, verify and load a model; returns ``(network in eval mode on CPU, card)``.

    Raises:
        WeightsError: missing file or card, bad JSON, checksum mismatch, unknown architecture or a
            state dict that does not fit the architecture.
    """
    pt, card = resolve_weights(model, path)
    state = _load_state_dict(pt, card)
    with torch.device("meta"):  # shapes only: a card naming a huge network allocates nothing
        skeleton = build_model(card.arch, card.kwargs)
    problems = _fit_problems(skeleton, state)
    if problems:
        raise WeightsError(f"weights {pt} do not fit architecture {card.arch} {card.kwargs}: {problems}")
    net = build_model(card.arch, card.kwargs)
    net.load_state_dict(state, strict=True)
    net.eval()
    if card.is_placeholder:
        log.warning("model %s uses RANDOM WEIGHTS (placeholder): the output is not an enhanced map", card.name)
    log.info("Loaded model %s (%s, %d parameters) from %s", card.name, card.arch, count_parameters(net), pt)
    return net, card


def save_weights(model: nn.Module, card_fields: Mapping[str, Any], path: str | os.PathLike[str],
                 dtype: torch.dtype | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` (``.pt``) and its card beside it (atomic temp + rename).

    ``dtype`` (e.g. ``torch.float16``) stores the floating-point tensors in that type; loading casts
    them back to the model's own type.

    ``card_fields`` holds the card fields (:class:`ModelCard`); ``sha256`` and ``parameters`` are
    filled in, and ``arch``/``kwargs`` default to the model's own (``model.arch_kwargs``).

    Returns:
        The ``.pt`` path.
    """
    path = Path(path)
    if path.suffix != ".pt":
        raise WeightsError(f"weights file name must end in .pt, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = dict(card_fields)
    if "arch" not in fields:
        names = [n for n, cls in ARCHITECTURES.items() if type(model) is cls]
        if not names:
            raise WeightsError(f"cannot tell the architecture of {type(model).__name__}; give 'arch'")
        fields["arch"] = names[0]
    if "kwargs" not in fields:
        fields["kwargs"] = dict(getattr(model, "arch_kwargs", {}))
    fields.setdefault("name", path.stem)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    fields["parameters"] = count_parameters(model)
    cards: list[ModelCard] = []

    def write_pt(tmp: str) -> None:  # the card is checked before the weights replace an older file
        torch.save(state, tmp)
        cards.append(ModelCard.from_dict({**fields, "sha256": sha256_file(tmp)}, source=f"card for {path}"))

    atomic_write(path, write_pt)
    card = cards[0]
    text = json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n"
    atomic_write(card_path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    log.info("Saved weights %s (%d parameters, sha256 %s)", path, card.parameters, card.sha256[:12])
    return path


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _describe_training(training: Mapping[str, Any]) -> str:
    """Flat entries on one line; each nested entry (dataset, ...) on its own indented line."""
    flat = ", ".join(f"{k}: {_value(v)}" for k, v in training.items() if not isinstance(v, Mapping))
    nested = [f"\n  {k}: " + ", ".join(f"{kk}: {_value(vv)}" for kk, vv in v.items())
              for k, v in training.items() if isinstance(v, Mapping) and v]
    return (flat or "not described") + "".join(nested)


def describe(card: ModelCard) -> str:
    """Multi-line human summary of a card (used by ``deepemhancer info``)."""
    filters = card.kwargs.get("filters")
    training = _describe_training(card.training)
    lines = [
        f"model:         {card.name}" + (f" (version {card.version})" if card.version else ""),
        f"architecture:  {card.arch}" + (f", filters {'/'.join(map(str, filters))}" if filters else ""),
        f"parameters:    {card.parameters:,}",
        f"cube size:     {card.tile} voxels",
        f"voxel size:    {card.voxel_size:g} A/voxel",
        f"normalization: {card.normalization}",
        f"target:        {card.target or 'not described'}",
        f"training:      {training}",
        f"license:       {card.license or 'not stated'}",
        f"sha256:        {card.sha256[:16]}...",
    ]
    if card.notes:
        lines.append(f"notes:         {card.notes}")
    return "\n".join(lines)
