"""Installed as deepemhancer.viewers (see package_dir in setup.py)."""
from .viewer_deepemhancer import (  # noqa: F401
    DeepEMhancerChimeraViewer,
    DeepEMhancerCootViewer,
    DeepEMhancerPlotViewer,
)
