"""deepemhancer_engine: DeepEMhancer cryo-EM map enhancement in PyTorch.

Public API (imported lazily so that ``import deepemhancer_engine`` stays cheap)::

    from deepemhancer_engine import enhance, enhance_file, read_map, write_map
    enhance_file(["half1.mrc", "half2.mrc"], "enhanced.mrc")
    enhance_file(["half1.mrc", "half2.mrc"], "enhanced.mrc", confidence="confidence.mrc")
    found = enhance_with_confidence(half1, half2, voxel_size)  # .enhanced, .confidence, .summary

The engine never imports Scipion (``pyworkflow``/``pwem``).
"""

from __future__ import annotations

from .version import __version__

__all__ = ["__version__", "enhance", "enhance_file", "enhance_with_confidence", "confidence_map", "read_map",
           "write_map", "EnhanceConfig", "EvaluationResult"]

_LAZY = {
    "enhance": "pipeline",
    "enhance_file": "pipeline",
    "enhance_with_confidence": "pipeline",
    "confidence_map": "confidence",
    "read_map": "io",
    "write_map": "io",
    "EnhanceConfig": "config",
    "EvaluationResult": "evaluate",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
